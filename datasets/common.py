"""Helpers shared by the dataset plugins: annotation text files, MATLAB annotation files,
ImageNet-style class folders with their classnames.txt."""
import os

from caspl import CasplError
from caspl.data import Datum
from caspl.data.datum import IMAGE_EXTENSIONS, listdir_visible


def read_lines(path, preparation):
    """The non-empty, stripped lines of an annotation text file (CRLF or LF)."""
    if not os.path.isfile(path):
        raise CasplError(f"{path} is missing ({preparation})")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def load_mat(path, key, name, preparation):
    """Field `key` of a MATLAB annotation file, flattened; scipy is needed only here."""
    if not os.path.isfile(path):
        raise CasplError(f"{path} is missing ({preparation})")
    try:
        import numpy as np
        from scipy.io import loadmat
    except ImportError:
        raise CasplError(f"{name}'s annotations are MATLAB files ({path}): install scipy to build the split from "
                         f"the .mat files, or download split_zhou_{name}.json (CoOp DATASETS.md)") from None
    return np.ravel(loadmat(path)[key])


def mat_scalar(value):
    """The single number or string inside a loadmat cell (any nesting depth)."""
    import numpy as np

    while isinstance(value, np.ndarray):
        value = value.ravel()[0]
    return value.item() if isinstance(value, np.generic) else value


# --- ImageNet and its variants ---

INDEX_FILE = "caspl_index.pkl"  # our folder-scan cache; CoOp's preprocessed.pkl is left alone


def read_classnames(path, preparation):
    """classnames.txt, one "<wnid> <class name words>" per line -> {wnid: name} in file order."""
    names = {}
    for line in read_lines(path, preparation):
        wnid, _, name = line.partition(" ")
        names[wnid] = name.strip()
    return names


def class_folders(folder):
    """The visible sub-folders of `folder`, sorted (plain files such as README.txt are skipped)."""
    return sorted(e for e in listdir_visible(folder) if os.path.isdir(os.path.join(folder, e)))


def folder_images(folder, label, classname):
    """A Datum per image file directly in `folder`, in sorted file-name order."""
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith(".")
                       and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())
    return [Datum(os.path.join(folder, n), label, classname) for n in names]


def class_name(names, wnid, names_file):
    """The name of `wnid` in classnames.txt (a clear error if it has no line)."""
    if wnid not in names:
        raise CasplError(f"{names_file} has no line for class folder {wnid}")
    return names[wnid]


def scan_class_folders(root, entries):
    """The images of root/<folder>/ for each (label, folder, class name), in that order."""
    items = []
    for label, folder, name in entries:
        items += folder_images(os.path.join(root, folder), label, name)
    return items

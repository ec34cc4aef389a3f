"""UCF101 as still images, CoOp's layout: $DATA/ucf101/UCF-101-midframes/<Action_Words>/
<video>.jpg (the middle frame of each video), ucfTrainTestlist/ and split_zhou_UCF101.json.
Without the JSON the split is built from classInd.txt, trainlist01.txt (-> 80% train /
20% val) and testlist01.txt. Class name: the CamelCase action split into words joined by
"_" (ApplyEyeMakeup -> Apply_Eye_Makeup), which is also the frame folder's name."""
import os
import re

from caspl import DATASET_REGISTRY, CasplError
from caspl.data import DatasetBase, Datum, check_on_disk
from caspl.data.prepare import Counts, Put, Recipe, Unpack

from .common import read_lines
from .sources import SOURCES

SPLIT = "split_zhou_UCF101.json"


def action_words(action):
    return "_".join(re.findall(r"[A-Z][^A-Z]*", action))


@DATASET_REGISTRY.register()
class UCF101(DatasetBase):
    dataset_dir = "ucf101"
    image_dir = "UCF-101-midframes"
    template = "a photo of a person doing {}."
    preparation = "extract UCF-101-midframes.zip and add split_zhou_UCF101.json as in CoOp's DATASETS.md"
    download = Recipe((Unpack(SOURCES["ucf101/UCF-101-midframes.zip"], {"UCF-101-midframes": "UCF-101-midframes"}),
                       Put(SOURCES[f"ucf101/{SPLIT}"])),
                      Counts(101, 7639, 1898, 3783), split=SPLIT)

    def read_data(self):
        def make():
            lists = os.path.join(self.dataset_dir, "ucfTrainTestlist")
            labels = {}
            for line in read_lines(os.path.join(lists, "classInd.txt"), self.preparation):
                index, action = line.split()
                labels[action] = int(index) - 1
            trainval = self.read_list(os.path.join(lists, "trainlist01.txt"), labels)
            test = self.read_list(os.path.join(lists, "testlist01.txt"), labels)
            return (*self.split_train_val(trainval), test)

        return self.read_or_make_split(os.path.join(self.dataset_dir, SPLIT), make)

    def read_list(self, path, labels):
        """"<Action>/<video>.avi[ <class id>]" per line."""
        items = []
        for line in read_lines(path, self.preparation):
            action, video = line.split()[0].split("/")
            if action not in labels:
                raise CasplError(f"{path}: {line} is an action that classInd.txt does not list")
            name = action_words(action)
            frame = os.path.splitext(video)[0] + ".jpg"
            items.append(Datum(os.path.join(self.image_dir, name, frame), labels[action], name))
        return check_on_disk(items, path)

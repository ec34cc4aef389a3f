"""The weights of a TorchScript archive, read without running anything in it.

torch.jit.load compiles an archive's code and calls `__setstate__` on each object whose class
defines one, so a crafted archive runs what it likes. The archive is a zip: `data.pkl` pickles
the module tree (objects of the archive's classes, `__torch__.*`, whose tensors
`torch._utils._rebuild_tensor_v2` rebuilds from storages named by persistent ids), `data/`
holds the storages and `code/` the classes' source. Here that source is parsed, never
compiled, for each class's parameters and buffers, and `data.pkl` is read with caspl's
restricted unpickler (caspl.utils.io), each object rebuilt as a bag of its attributes. The
result is what `torch.jit.load(path).state_dict()` gives."""
import ast
import dataclasses
import pickle
import sys
import zipfile
from collections import OrderedDict

import torch

from .io import RefusedGlobal, restricted_load

STORAGE_DTYPES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
                  "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
                  "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                  "BoolStorage": torch.bool}
# TorchScript's tags on typed lists and dicts: each gives back its first argument, as torch.jit._pickle's do
CONTAINER_TAGS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "restore_type_tag")
# what a crafted or damaged data.pkl can raise while it is read
MALFORMED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
             RuntimeError, RecursionError, zipfile.BadZipFile)


class UnreadableTorchScript(Exception):
    """An archive whose weights cannot be read without running it; the text says why."""


@dataclasses.dataclass(frozen=True)
class ScriptClass:
    """What the reader needs of a class defined in an archive's code/ folder."""

    name: str  # qualified: __torch__.clip.model.CLIP
    is_module: bool
    parameters: frozenset
    buffers: frozenset  # those typed Tensor: torch leaves an Optional[Tensor] buffer out of a state dict
    inert: bool  # a plain class or a module, without the __setstate__ that loading would run
    runs_code: bool  # it defines __setstate__


class ScriptObject:
    """An object of an archive's class, rebuilt as a bag of its attributes: none of the
    class's code runs. Each class gets a subclass that sets `script_class`."""

    script_class = None
    attributes = None

    def __setstate__(self, state):  # pickle's BUILD: the attributes TorchScript saved
        if not isinstance(state, dict):
            raise UnreadableTorchScript(f"an object of {self.script_class.name} is saved as other than its attributes")
        self.attributes = state


def _first_argument(value, *_):
    return value


def _describe(name, node):
    """The ScriptClass that the class definition `node` (an ast.ClassDef) declares."""
    lists, types, methods = {}, {}, set()
    for statement in node.body:
        if isinstance(statement, ast.FunctionDef):
            methods.add(statement.name)
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            types[statement.target.id] = ast.unparse(statement.annotation)
        elif isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
            if isinstance(target, ast.Name) and target.id in ("__parameters__", "__buffers__"):
                lists[target.id] = ast.literal_eval(statement.value)
            elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                  and target.value.id == "__annotations__"):  # __annotations__["0"] = Tensor: not an identifier
                types[ast.literal_eval(target.slice)] = ast.unparse(statement.value)
    bases = [ast.unparse(base) for base in node.bases]
    buffers = lists.get("__buffers__", [])
    return ScriptClass(name=name, is_module=bases == ["Module"], parameters=frozenset(lists.get("__parameters__", [])),
                       buffers=frozenset(b for b in buffers if types.get(b) == "Tensor"),
                       inert=bases in ([], ["Module"]) and "__setstate__" not in methods,
                       runs_code="__setstate__" in methods)


class _ArchiveReader:
    """One archive being read: its classes (from code/) and its storages (from data/, each read once)."""

    def __init__(self, archive):
        self.archive = archive
        names = archive.namelist()
        if not names:
            raise UnreadableTorchScript("the archive is empty")
        self.prefix = names[0].split("/")[0]  # the folder every record is in, as torch reads it
        self.names = set(names)
        self.storages = {}
        self.classes = self._script_classes()

    def _script_classes(self):
        """{(module, name): ScriptClass} of the classes in code/; a file that does not parse
        defines none, so data.pkl cannot name its classes."""
        code, classes = f"{self.prefix}/code/", {}
        for member in sorted(self.names):
            if not (member.startswith(code) and member.endswith(".py")):
                continue
            module = member[len(code):-len(".py")].replace("/", ".")
            try:
                tree = ast.parse(self.archive.read(member).decode("utf-8"))
                found = {(module, node.name): _describe(f"{module}.{node.name}", node)
                         for node in tree.body if isinstance(node, ast.ClassDef)}
            except (SyntaxError, ValueError, TypeError, RecursionError):
                continue
            classes.update(found)
        return classes

    def _allowed(self):
        """What data.pkl may name: the inert classes (as ScriptObject stand-ins), the tensor
        rebuild, the storage types (standing for their dtypes) and the container tags."""
        allowed = {("torch._utils", "_rebuild_tensor_v2"): self.rebuild_tensor,
                   ("collections", "OrderedDict"): OrderedDict}
        allowed.update({("torch", name): dtype for name, dtype in STORAGE_DTYPES.items()})
        allowed.update({("torch.jit._pickle", tag): _first_argument for tag in CONTAINER_TAGS})
        allowed.update({key: type(key[1], (ScriptObject,), {"script_class": script_class})
                        for key, script_class in self.classes.items() if script_class.inert})
        return allowed

    def rebuild_tensor(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        """torch._utils._rebuild_tensor_v2's arguments; gradient flags do not reach a state dict."""
        if hooks or metadata:
            raise UnreadableTorchScript("a tensor carries backward hooks or metadata")
        return storage.as_strided(size, stride, offset)  # refuses a view beyond its storage

    def load_storage(self, pid):
        """A persistent id ("storage", dtype, key, location, numel): data/<key> as a flat tensor
        on the CPU (as map_location="cpu"); tensors that share a storage share it here too."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)
                and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise UnreadableTorchScript("data.pkl refers to something other than a storage")
        _, dtype, key, _, numel = pid
        if key not in self.storages:
            member = f"{self.prefix}/data/{key}"
            if self.archive.getinfo(member).file_size != numel * dtype.itemsize:
                raise UnreadableTorchScript(f"storage {key} does not hold {numel} values")
            storage = torch.empty(numel, dtype=dtype)
            raw = storage.view(torch.uint8).numpy()
            with self.archive.open(member) as f:
                if f.readinto(raw) != raw.size:
                    raise UnreadableTorchScript(f"storage {key} is cut short")
            self.storages[key] = storage
        return self.storages[key]

    def state_dict(self):
        byteorder = f"{self.prefix}/byteorder"
        order = self.archive.read(byteorder).decode() if byteorder in self.names else "little"  # torch's default
        if order != sys.byteorder:
            raise UnreadableTorchScript(f"its tensors are {order}-endian")
        if f"{self.prefix}/data.pkl" not in self.names:
            raise UnreadableTorchScript("it has no data.pkl (an older TorchScript format)")
        try:
            with self.archive.open(f"{self.prefix}/data.pkl") as f:
                root = restricted_load(f, self._allowed(), self.load_storage)
            if not (isinstance(root, ScriptObject) and root.script_class.is_module):
                raise UnreadableTorchScript("data.pkl does not hold a module")
            state = OrderedDict()
            self._collect(root, "", state, ())
            return state
        except RefusedGlobal as err:
            refused = next((c for c in self.classes.values() if c.name == str(err)), None)
            if refused is not None and refused.runs_code:
                raise UnreadableTorchScript(f"its class {refused.name} defines __setstate__") from None
            raise UnreadableTorchScript(f"data.pkl names {err}, which is neither an inert TorchScript class "
                                        "nor a tensor-rebuild function") from None
        except MALFORMED as err:
            raise UnreadableTorchScript(f"data.pkl is not as torch writes it ({type(err).__name__}: "
                                        f"{str(err).splitlines()[0] if str(err) else ''})") from None

    def _collect(self, module, prefix, state, parents):
        """`module`'s parameters, then its buffers, then its submodules' (nn.Module.state_dict's
        order), each in the order the class declares its attributes."""
        attributes, script_class = module.attributes, module.script_class
        if not isinstance(attributes, dict):
            raise UnreadableTorchScript(f"an object of {script_class.name} has no attributes")
        for name, value in attributes.items():
            if name in script_class.parameters and isinstance(value, torch.Tensor):  # a None parameter is left out
                state[prefix + name] = value
        for name, value in attributes.items():
            if name in script_class.buffers:
                if not isinstance(value, torch.Tensor):
                    raise UnreadableTorchScript(f"buffer {prefix}{name} is not a tensor")
                state[prefix + name] = value
        lineage = parents + (module,)
        for name, value in attributes.items():
            if isinstance(value, ScriptObject) and value.script_class.is_module:
                if any(value is ancestor for ancestor in lineage):
                    raise UnreadableTorchScript(f"module {prefix}{name} contains itself")
                self._collect(value, f"{prefix}{name}.", state, lineage)


def read_torchscript_weights(path):
    """The parameters and buffers of the TorchScript archive `path`, named and valued as
    torch.jit.load(path, map_location="cpu").state_dict() gives them, read without running
    anything in it. An archive it cannot read so raises UnreadableTorchScript."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _ArchiveReader(archive).state_dict()
    except zipfile.BadZipFile as err:
        raise UnreadableTorchScript(f"a damaged archive ({err})") from None

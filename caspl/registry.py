"""Name -> class registries that the plugin folders fill by decorator."""
import difflib

from .errors import CasplError


class Registry:
    def __init__(self, kind):
        self.kind = kind
        self._entries = {}
        self._factories = {}

    def register(self, obj=None, name=None):
        """Use as `@REG.register()` or `REG.register(obj, name)`; the key defaults to the class name."""

        def add(o):
            key = name or o.__name__
            if key in self._entries and self._entries[key] is not o:
                raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = o
            return o

        return add if obj is None else add(obj)

    def add_factory(self, prefix, make):
        """Names `<prefix><X>` resolve to `make(entry X)`, built on first lookup and registered,
        so a wrapper exists for every entry, including ones registered later."""
        self._factories[prefix] = make

    def get(self, name):
        for prefix, make in self._factories.items():
            base = name[len(prefix):]
            if name not in self._entries and name.startswith(prefix) and base in self._entries:
                self.register(make(self._entries[base]), name)
        if name not in self._entries:
            hint = difflib.get_close_matches(name, self._entries, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise CasplError(f"unknown {self.kind} {name!r} (registered: {', '.join(sorted(self._entries))}){extra}")
        return self._entries[name]

    def __contains__(self, name):
        return name in self._entries

    def items(self):
        return list(self._entries.items())

    def names(self):
        return sorted(self._entries)


TRAINER_REGISTRY = Registry("trainer")
DATASET_REGISTRY = Registry("dataset")
# A reference repository's command line, read by the plugin that owns it (caspl.cli.Dialect)
DIALECT_REGISTRY = Registry("command-line dialect")

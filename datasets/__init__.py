"""Dataset plugins: importing this package registers every dataset in DATASET_REGISTRY."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

"""EuroSAT (Helber et al.): 10 land-use classes of Sentinel-2 RGB tiles, CoOp's layout:
$DATA/eurosat/2750/<Class>/*.jpg and $DATA/eurosat/split_zhou_EuroSAT.json."""
import os

from caspl import DATASET_REGISTRY
from caspl.data import DatasetBase
from caspl.data.prepare import Counts, Put, Recipe, Unpack

from .sources import SOURCES

# Readable class names (the folder names are CamelCase codes)
NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}
SPLIT = "split_zhou_EuroSAT.json"


@DATASET_REGISTRY.register()
class EuroSAT(DatasetBase):
    dataset_dir = "eurosat"
    image_dir = "2750"
    template = "a centered satellite photo of {}."
    preparation = "download EuroSAT_RGB and split_zhou_EuroSAT.json as in CoOp's DATASETS.md"
    download = Recipe((Unpack(SOURCES["eurosat/EuroSAT.zip"], {"2750": "2750"}), Put(SOURCES[f"eurosat/{SPLIT}"])),
                      Counts(10, 13500, 5400, 8100), split=SPLIT)

    def read_data(self):
        return self.read_or_make_split(os.path.join(self.dataset_dir, SPLIT),
                                       lambda: self.split_folders(rename=NEW_CNAMES))

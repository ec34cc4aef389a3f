"""Where every file of the benchmark datasets comes from: one row per file, with its
published checksums and who keeps them. `python -m caspl.data.prepare` fetches these files
(the recipes in the dataset modules say what to do with them); CASPL_DATA_SOURCES replaces
fields of a row, for a mirror.

Origins: torchvision's dataset classes (URL and MD5), tensorflow-datasets' url_checksums
(size and SHA-256), CoOp's DATASETS.md (its Google Drive files: split files, UCF-101 middle
frames, ImageNet's classnames.txt; no checksums published, so they are checked by content:
the split check that follows every preparation)."""
from caspl.data.prepare import Source, source_table

COOP = "CoOp DATASETS.md (Google Drive; no checksum published)"
TFDS = "tensorflow-datasets url_checksums"


def drive(file_id):
    return f"https://drive.google.com/uc?id={file_id}"


def coop_drive(key, file_id):
    return Source(key, drive(file_id), origin=COOP)


IMAGENET_BY_HAND = ("https://image-net.org/download-images.php after signing in: ILSVRC2012, the training images "
                    "(Task 1 & 2), the validation images (all tasks) and the development kit (Task 1 & 2)")
CARS_BY_HAND = ("the Stanford host (ai.stanford.edu/~jkrause/car196) is gone: copies of the original files are "
                "discussed in pytorch/vision issue #7545; the SHA-256 is tensorflow-datasets' of the original")

SOURCES = source_table(
    # ImageNet: registration needed, so by hand; classnames.txt (CLIP's class names) is shared with the variants
    Source("imagenet/ILSVRC2012_img_train.tar", checksums=("md5:1d675b47d978889d74fa0da5fadfb00e",),
           origin="torchvision.datasets.imagenet", manual=IMAGENET_BY_HAND),
    Source("imagenet/ILSVRC2012_img_val.tar", checksums=("md5:29b22e2961454d5413ddabcf34fc5622",),
           origin="torchvision.datasets.imagenet", manual=IMAGENET_BY_HAND),
    Source("imagenet/ILSVRC2012_devkit_t12.tar.gz", checksums=("md5:fa75699e90414af021442c21a62c3abf",),
           origin="torchvision.datasets.imagenet", manual=IMAGENET_BY_HAND),
    coop_drive("imagenet/classnames.txt", "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"),
    # Caltech101: the zip holds 101_ObjectCategories.tar.gz (vision.caltech.edu, CoOp's link, is gone)
    Source("caltech-101/caltech-101.zip", "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
           ("md5:3138e1922a9193bfa496528edbbc45d0",
            "sha256:331234750fc7f77520e50d9565e8b6907b03565e30320da1401130db08c61f91"),
           origin="torchvision.datasets.Caltech101; " + TFDS),
    coop_drive("caltech-101/split_zhou_Caltech101.json", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
    Source("oxford_pets/images.tar.gz", "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
           ("md5:5c4f3ee8e5d25df40f4fd59a7f44e54c",
            "sha256:67195c5e1c01f1ab5f9b6a5d22b8c27a580d896ece458917e61d459337fa318d"),
           origin="torchvision.datasets.OxfordIIITPet; " + TFDS,
           fallback="https://thor.robots.ox.ac.uk/~vgg/data/pets/images.tar.gz"),
    Source("oxford_pets/annotations.tar.gz", "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
           ("md5:95a8c909bbe2e81eed6a22bccdf3f68f",
            "sha256:52425fb6de5c424942b7626b428656fcbd798db970a937df61750c0f1d358e91"),
           origin="torchvision.datasets.OxfordIIITPet; " + TFDS,
           fallback="https://thor.robots.ox.ac.uk/~vgg/data/pets/annotations.tar.gz"),
    coop_drive("oxford_pets/split_zhou_OxfordPets.json", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
    Source("stanford_cars/cars_train.tgz", checksums=(
        "sha256:512b227b30e2f0a8aab9e09485786ab4479582073a144998da74d64b801fd288",), origin=TFDS, manual=CARS_BY_HAND),
    Source("stanford_cars/cars_test.tgz", checksums=(
        "sha256:bffea656d6f425cba3c91c6d83336e4c5f86c6cffd8975b0f375d3a10da8e243",), origin=TFDS, manual=CARS_BY_HAND),
    Source("stanford_cars/cars_test_annos_withlabels.mat", checksums=(
        "sha256:790f75be8ea34eeded134cc559332baf23e30e91367e9ddca97d26ed9b895f05",), origin=TFDS, manual=CARS_BY_HAND),
    # the devkit: a copy attached to pytorch/vision issue #7545, checked against the original's SHA-256
    Source("stanford_cars/car_devkit.tgz", "https://github.com/pytorch/vision/files/11644847/car_devkit.tgz",
           ("sha256:b97deb463af7d58b6bfaa18b2a4de9829f0f79e8ce663dfa9261bf7810e9accd",), origin=TFDS,
           manual=CARS_BY_HAND),
    coop_drive("stanford_cars/split_zhou_StanfordCars.json", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
    Source("oxford_flowers/102flowers.tgz", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
           ("md5:52808999861908f626f3c1f4e79d11fa",), origin="torchvision.datasets.Flowers102"),
    Source("oxford_flowers/imagelabels.mat", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",
           ("md5:e0620be6f572b9609742df49c70aed4d",), origin="torchvision.datasets.Flowers102"),
    coop_drive("oxford_flowers/cat_to_name.json", "1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0"),
    coop_drive("oxford_flowers/split_zhou_OxfordFlowers.json", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
    Source("food-101/food-101.tar.gz", "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
           ("md5:85eeb15f3717b99a5da872d97d918f87",), origin="torchvision.datasets.Food101"),
    coop_drive("food-101/split_zhou_Food101.json", "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"),
    Source("fgvc_aircraft/fgvc-aircraft-2013b.tar.gz",
           "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
           ("sha256:d5f68b1b81d6d7831eb9d5c5517074176b5dfbce6bcb43dc14ed1c66a87b8d75",),
           origin="torchvision.datasets.FGVCAircraft (URL); " + TFDS),
    # SUN397: with CoOp's split file the reader needs no Partitions.zip (ClassName.txt is in the archive)
    Source("sun397/SUN397.tar.gz", "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
           ("md5:8ca2778205c41d23104230ba66911c7a",
            "sha256:f404130965a7ad77bed5ececc71e720ab50f3cc1e1bb257257610d38f3b928ec"),
           origin="torchvision.datasets.SUN397; " + TFDS),
    coop_drive("sun397/split_zhou_SUN397.json", "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq"),
    Source("dtd/dtd-r1.0.1.tar.gz", "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
           ("md5:fff73e5086ae6bdbea199a49dfb8a4c1",), origin="torchvision.datasets.DTD"),
    coop_drive("dtd/split_zhou_DescribableTextures.json", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
    # EuroSAT: torchgeo's copy on Hugging Face (torchvision's URL), else the original host (CoOp's link)
    Source("eurosat/EuroSAT.zip",
           "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/"
           "EuroSAT.zip",
           ("md5:c8fa014336c82ac7804f0398fcb19387",
            "sha256:8ebea626349354c5328b142b96d0430e647051f26efc2dc974c843f25ecf70bd"),
           origin="torchvision.datasets.EuroSAT; " + TFDS + " (the original host's file)",
           fallback="http://madm.dfki.de/files/sentinel/EuroSAT.zip"),
    coop_drive("eurosat/split_zhou_EuroSAT.json", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
    coop_drive("ucf101/UCF-101-midframes.zip", "10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O"),
    coop_drive("ucf101/split_zhou_UCF101.json", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
    # ImageNet's test sets: the Hugging Face copy of ImageNetV2 is the one its README points to
    Source("imagenetv2/imagenetv2-matched-frequency.tar.gz",
           "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz",
           ("sha256:f0c37fdf925916b19ea1323cd9a2208cdb6959ba2c32eef2a7fc393835c9ca7c",
            "sha256:a32004f9e773279307499059d320336a23ccdc62cb32063da29bae9bd04c122c"), origin=TFDS,
           fallback="https://s3-us-west-2.amazonaws.com/imagenetv2public/imagenetv2-matched-frequency.tar.gz"),
    Source("imagenet-sketch/ImageNet-Sketch.zip", drive("1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA"),
           ("sha256:4d3ce6b82a7c48aabf14aeac105eb533e75707f152cc858f55bfc022031a72ed",),
           origin="github.com/HaohanWang/ImageNet-Sketch (Google Drive); " + TFDS,
           fallback="https://huggingface.co/datasets/imagenet_sketch/resolve/main/data/ImageNet-Sketch.zip"),
    Source("imagenet-adversarial/imagenet-a.tar", "https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar",
           ("sha256:3bb3632277e6ba6392ea64c02ddbf4dd2266c9caffd6bc09c9656d28f012589e",),
           origin="github.com/hendrycks/natural-adv-examples; " + TFDS),
    Source("imagenet-rendition/imagenet-r.tar", "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
           ("sha256:18c6bf493b39a0d975d48e587437f562caab9c52ae6327dcfa9dd8eb54aa1b52",),
           origin="github.com/hendrycks/imagenet-r; " + TFDS),
)

"""Defaults for every core key (the names follow Dassl, so the reference repos' YAML
files load unchanged; a Dassl key caspl has no use for, such as INPUT.CUTOUT_N, is kept for
that and refused when set, as every key nothing reads). Per-trainer keys live under TRAINER.<NAME> and are declared by
each trainer class (its CONFIG_NAME and CONFIG_DEFAULTS)."""
from yacs.config import CfgNode as CN

_C = CN()

_C.OUTPUT_DIR = "./output"
_C.RESUME = ""
_C.SEED = -1  # a negative seed means "not fixed"; 0 is a valid seed
_C.USE_CUDA = True
_C.VERBOSE = True

_C.INPUT = CN()
_C.INPUT.SIZE = (224, 224)
_C.INPUT.INTERPOLATION = "bilinear"
_C.INPUT.TRANSFORMS = ()
_C.INPUT.NO_TRANSFORM = False
_C.INPUT.PIXEL_MEAN = [0.485, 0.456, 0.406]
_C.INPUT.PIXEL_STD = [0.229, 0.224, 0.225]
_C.INPUT.CROP_PADDING = 4
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)
_C.INPUT.CUTOUT_N = 1
_C.INPUT.CUTOUT_LEN = 16
_C.INPUT.GN_MEAN = 0.0
_C.INPUT.GN_STD = 0.15
_C.INPUT.RANDAUGMENT_N = 2
_C.INPUT.RANDAUGMENT_M = 10
_C.INPUT.COLORJITTER_B = 0.4
_C.INPUT.COLORJITTER_C = 0.4
_C.INPUT.COLORJITTER_S = 0.4
_C.INPUT.COLORJITTER_H = 0.1
_C.INPUT.RGS_P = 0.2
_C.INPUT.GB_P = 0.5
_C.INPUT.GB_K = 21

_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.NAME = ""
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
_C.DATASET.NUM_LABELED = -1
_C.DATASET.NUM_SHOTS = -1  # -1: every training image
_C.DATASET.VAL_PERCENT = 0.1
_C.DATASET.STL10_FOLD = -1
_C.DATASET.CIFAR_C_TYPE = ""
_C.DATASET.CIFAR_C_LEVEL = 1
_C.DATASET.ALL_AS_UNLABELED = False
_C.DATASET.SUBSAMPLE_CLASSES = "all"  # all | base | new
_C.DATASET.UNLABELED_DIRS = ()  # extra folders of unlabeled images (relative to ROOT or absolute)
_C.DATASET.SKIP_BAD_IMAGES = False  # skip unreadable images with a warning instead of stopping
# ImageFolder (your own data): DIR holds one sub-folder per class
_C.DATASET.DIR = ""
_C.DATASET.SPLIT_FILE = "split.json"  # in DIR; written (seeded) when missing
_C.DATASET.SPLIT_RATIOS = (0.5, 0.2, 0.3)  # train, val, test shares for a generated split
_C.DATASET.TEMPLATE = "a photo of a {}."  # zero-shot prompt for ImageFolder classes

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4  # capped at the CPUs each process has (CPU count / processes on the machine)
_C.DATALOADER.PIN_MEMORY = "auto"  # auto: when training on a GPU; True | False
# auto: on a GPU with workers (faster epochs; the augmentation of a resumed run then differs
# from an uninterrupted one); True | False
_C.DATALOADER.PERSISTENT_WORKERS = "auto"
_C.DATALOADER.K_TRANSFORMS = 1
_C.DATALOADER.RETURN_IMG0 = False
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
_C.DATALOADER.TRAIN_X.N_INS = 16
_C.DATALOADER.TRAIN_U = CN()
_C.DATALOADER.TRAIN_U.SAME_AS_X = True
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0
_C.DATALOADER.TRAIN_U.N_INS = 16
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32

_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""  # a previous run's output directory to start the modules from (see Trainer.init_from)
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""  # an OpenAI CLIP name ("ViT-B/16") or a local .pt file
_C.MODEL.BACKBONE.PRETRAINED = True
# run the positions every class prompt shares ("[SOS] <context> a photo of a") once, not once per
# class (exact: CLIP's text transformer is causal); False: the plain pass
_C.MODEL.TEXT_SHARED_PREFIX = True
# recompute each transformer block's activations in the backward pass instead of keeping them
# (text and image towers): less memory for more time
_C.MODEL.ACTIVATION_CHECKPOINTING = False
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0

_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
_C.OPTIM.STAGED_LR = False
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1
_C.OPTIM.LR_SCHEDULER = "single_step"  # single_step | multi_step | cosine
_C.OPTIM.STEPSIZE = (-1,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
_C.OPTIM.WARMUP_EPOCH = -1
_C.OPTIM.WARMUP_TYPE = "linear"  # linear | constant
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
_C.OPTIM.WARMUP_RECOUNT = True
# Linear LR scaling for large batches: > 0 multiplies every LR by global batch (per-process
# TRAIN_X batch x processes) / LR_BATCH_REFERENCE; 0 leaves the LR as given.
_C.OPTIM.LR_BATCH_REFERENCE = 0

_C.TRAIN = CN()
_C.TRAIN.CHECKPOINT_FREQ = 0  # 0: keep only the last epoch's checkpoint
_C.TRAIN.PRINT_FREQ = 10
_C.TRAIN.SKIP_NONFINITE_LOSS = False  # skip a step whose loss is NaN or inf (counted in the log) instead of stopping
_C.TRAIN.COUNT_ITER = "train_x"

_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
_C.TEST.COMPUTE_CMAT = False
_C.TEST.NO_TEST = False
_C.TEST.SPLIT = "test"  # test | val
_C.TEST.FINAL_MODEL = "last_step"  # last_step | best_val

_C.TRAINER = CN()
_C.TRAINER.NAME = ""


def core_defaults():
    return _C.clone()

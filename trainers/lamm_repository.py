"""The LAMM repository's command line: its train.py runs LAMM as `--trainer CoOp` or
`--trainer MaPLe` with `--triplet-loss`, `--origin-clip` and `--shots K`. Read here as caspl's
LAMM trainers (trainers/lamm.py), with the same meaning, or refused with one line."""
from caspl import CasplError
from caspl.cli import Dialect
from caspl.registry import DIALECT_REGISTRY


@DIALECT_REGISTRY.register()
class LAMMRepository(Dialect):
    @staticmethod
    def add_arguments(p):
        p.add_argument("--triplet-loss", action="store_true",
                       help="LAMM repository: with --trainer CoOp or MaPLe, run LAMM_CoOp / LAMM_MaPLe "
                            "(hierarchical loss)")
        p.add_argument("--origin-clip", action="store_true",
                       help="LAMM repository: with --trainer CoOp, freeze the context (caspl's LAMM trainer)")
        p.add_argument("--shots", type=int, default=None,
                       help="LAMM repository: its weight-consolidation weight is 1/K")
        p.add_argument("--random-init", action="store_true",
                       help="LAMM repository: random label initialisation (not supported: refused)")

    @staticmethod
    def translate(args, cfg):
        """The LAMM repository's command lines, as caspl's LAMM trainers: --trainer CoOp
        --triplet-loss [--origin-clip] --shots K and --trainer MaPLe --triplet-loss, with the
        weight-consolidation weight 1/K (K from --shots, 1 when absent, as there). Returns the
        lines to log."""
        if args.random_init:
            raise CasplError("--random-init (the LAMM repository's random label initialisation) is not supported: "
                             "caspl's LAMM labels start from the class names")
        if not (args.triplet_loss or args.origin_clip):
            if args.shots is not None:
                raise CasplError("--shots sets only LAMM's weight 1/K: give it with --triplet-loss (the LAMM "
                                 "repository's flags), or set TRAINER.LAMM.WC_WEIGHT")
            return []
        given = cfg.TRAINER.NAME
        flags = " ".join(f for f, on in (("--triplet-loss", args.triplet_loss), ("--origin-clip", args.origin_clip))
                         if on)
        if given == "CoOp":
            trainer = "LAMM" if args.origin_clip else "LAMM_CoOp"
        elif given == "MaPLe" and not args.origin_clip:
            trainer = "LAMM_MaPLe"
        else:
            raise CasplError(f"{flags} with --trainer {given}: the LAMM repository's flags run LAMM on CoOp "
                             "(--origin-clip: context frozen) or MaPLe (--triplet-loss only); or use --trainer "
                             "LAMM / LAMM_CoOp / LAMM_MaPLe")
        shots = 1 if args.shots is None else args.shots
        if shots < 1:
            raise CasplError(f"--shots must be at least 1, not {shots}")
        lamm = cfg.TRAINER.LAMM
        lamm.HIERARCHICAL_LOSS, lamm.WC_WEIGHT = bool(args.triplet_loss), 1.0 / shots
        if trainer == "LAMM":  # the frozen context is CoOp's CTX_INIT phrase
            phrase = " ".join(cfg.TRAINER.COOP.CTX_INIT.replace("_", " ").split())
            if not phrase:
                raise CasplError("--origin-clip freezes CoOp's context at TRAINER.COOP.CTX_INIT, which is empty "
                                 "(a frozen random context): use a *_ctxv1 config")
            lamm.TEMPLATE, lamm.PREC = phrase + " {}.", cfg.TRAINER.COOP.PREC
        cfg.TRAINER.NAME = trainer
        return [f"LAMM repository flags: --trainer {given} {flags} --shots {shots} runs caspl's {trainer} "
                f"(TRAINER.LAMM.HIERARCHICAL_LOSS {lamm.HIERARCHICAL_LOSS}, WC_WEIGHT 1/{shots} = {lamm.WC_WEIGHT:g}"
                + (f", TEMPLATE {lamm.TEMPLATE!r}" if trainer == "LAMM" else "") + ")"]

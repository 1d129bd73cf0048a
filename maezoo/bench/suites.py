"""Named benchmark suites: which recipes, with which overrides, and which protocol a summary row shows.

``quick`` holds every modality's CPU-sized recipe (the image and video entries also run the k-NN monitor, for the
score-against-steps plot) (about 47 minutes on a quiet 2-core CPU; each entry's expected
minutes below are its measured wall time there); ``full`` holds the paper-scale ones (a GPU machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SuiteEntry:
    #: the entry's name: its results file is ``<name>.json`` and its run folder ``<runs>/<suite>/<name>``
    name: str
    #: recipe name (``maezoo list``) or path
    recipe: str
    #: ``key=value`` overrides, as on the ``maezoo run`` command line
    overrides: tuple[str, ...] = ()
    #: what the summary row calls the method (e.g. ``MAE ViT-T``)
    method: str = ""
    #: the protocol and metric the cross-modality summary shows for this entry
    main_protocol: str = "linprobe"
    main_metric: str = "top1"
    #: expected wall time on a 2-core CPU, for the suite's ETA (updated from measured entries while it runs)
    minutes: float = 5.0
    #: notes for the report (e.g. why a gap to the baseline is expected)
    notes: str = ""
    #: averaged rows over datasets: ``((label, dataset-name prefix), ...)``, e.g. the six held-out speakers of
    #: a leave-one-speaker-out split; the record gets a row per (label, protocol, metric) with mean ± std over them
    groups: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    entries: tuple[SuiteEntry, ...] = field(default_factory=tuple)


SUITES: dict[str, Suite] = {}


def register_suite(suite: Suite) -> Suite:
    if suite.name in SUITES:
        raise ValueError(f"suite {suite.name!r} is defined twice")
    names = [e.name for e in suite.entries]
    if len(set(names)) != len(names):
        raise ValueError(f"suite {suite.name!r}: entry names must be unique, got {names}")
    SUITES[suite.name] = suite
    return suite


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(sorted(SUITES))}")
    return SUITES[name]


register_suite(Suite("quick", "every modality's CPU-sized recipe (2-core CPU)", (
    SuiteEntry("image_mae_digits", "image/mae_digits_demo", ("monitor.every=200", "monitor.train_subset=1300", "monitor.test_subset=497", "monitor.pool=mean",), method="MAE ViT (demo, 8x8 digits)",
               minutes=1.0),
    SuiteEntry("image_mae_cifar10_small", "image/mae_cifar10_small", ("monitor.every=164", "monitor.train_subset=2000", "monitor.test_subset=500", "monitor.pool=mean",), method="MAE ViT (2.7 M)",
               minutes=4.5),
    SuiteEntry("image_convmae_cifar10", "image/convmae_cifar10", method="ConvMAE (2.5 M)", minutes=5.0,
               notes="pre-trained for about the ViT's wall time (430 vs 820 steps), both on norm-pix targets; a few "
                     "minutes of CPU pre-training do not show the paper's ImageNet gain (1,600 epochs)"),
    SuiteEntry("video_videomae_moving_digits", "video/videomae_moving_digits", ("monitor.every=200", "monitor.train_subset=600", "monitor.test_subset=200", "monitor.pool=mean",), method="VideoMAE (tube 0.9)",
               minutes=2.0),
    SuiteEntry("audio_audiomae_fsdd", "audio/audiomae_fsdd", method="Audio-MAE (local decoder)", minutes=9.0,
               groups=(("fsdd-loso (6 speakers)", "fsdd-loso-"),)),
    SuiteEntry("timeseries_patchtst_etth1", "timeseries/patchtst_etth1", method="PatchTST (self-supervised)",
               main_protocol="forecast_finetune", main_metric="mse@96", minutes=2.5),
    SuiteEntry("timeseries_tsformer_etth1", "timeseries/tsformer_etth1", method="TSFormer",
               main_protocol="forecast_finetune", main_metric="mse@96", minutes=1.5),
    SuiteEntry("text_bert_wordnet", "text/bert_wordnet", method="BERT-Tiny (MLM)", minutes=9.0),
    SuiteEntry("multimodal_m3ae_cifar10", "multimodal/m3ae_cifar10", method="M3AE (image + text)",
               main_protocol="linprobe@image", minutes=14.0,
               notes="captions built from WordNet carry the class; the image-only MAE row is the same encoder "
                     "pre-trained without text for the same steps (the recipe's ablation)"),
    SuiteEntry("graph_graphmae_cora", "graph/graphmae_cora", ("seeds=[0]",), method="GraphMAE (GAT)",
               main_protocol="node_linprobe", main_metric="accuracy", minutes=5.0),
    SuiteEntry("graph_graphmae_mutag", "graph/graphmae_tu", ("datasets=[MUTAG]",), method="GraphMAE (GIN)",
               main_protocol="svm", main_metric="accuracy", minutes=0.5,
               notes="on MUTAG (188 graphs) a randomly initialised GIN's pooled features with an RBF SVM are as good "
                     "as the pre-trained ones (within the 10-fold spread); the paper does not report that baseline"),
)))

register_suite(Suite("full", "paper-scale recipes (a GPU machine)", (
    SuiteEntry("image_mae_cifar10", "image/mae_cifar10_gpu", method="MAE ViT", minutes=60.0),
    SuiteEntry("video_videomae_ucf101", "video/videomae_ucf101", method="VideoMAE ViT-B", main_protocol="finetune",
               minutes=600.0, notes="needs UCF101 (see the recipe header for the list files)"),
    SuiteEntry("audio_audiomae_speechcommands", "audio/audiomae_speechcommands", method="Audio-MAE ViT-B",
               main_protocol="finetune", minutes=600.0, notes="needs Speech Commands V2"),
    SuiteEntry("timeseries_patchtst_etth1_h96", "timeseries/patchtst_etth1", (
        "forecast.horizons=[96]", "trainer.max_steps=200", "trainer.batch_size=64", "trainer.warmup_steps=10",
        "stages=[pretrain,forecast_finetune,forecast_scratch]", "forecast.head_epochs=1", "forecast.epochs=2",
        "forecast.max_steps_per_epoch=100", "forecast.lr=2.0e-4", "forecast.val_subset=null",
        "forecast.test_subset=null", "forecast.head_dropout=0.0"), method="PatchTST (self-supervised), full test split",
        main_protocol="forecast_finetune", main_metric="mse@96", minutes=40.0),
    SuiteEntry("graph_graphmae_cora", "graph/graphmae_cora", method="GraphMAE GAT", main_protocol="node_linprobe",
               main_metric="accuracy", minutes=30.0),
    SuiteEntry("graph_graphmae_tu", "graph/graphmae_tu", method="GraphMAE GIN", main_protocol="svm",
               main_metric="accuracy", minutes=10.0),
)))

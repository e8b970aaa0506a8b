"""``spikeport train``: resolve the config, build the model, load the data, fit, write the run folder.

Writes ``runs/<name>/``: ``config.yaml`` (the resolved config), ``model.pt`` (best weights and
the spec, rewritten after every epoch), ``checkpoint.pt`` (the state ``--resume`` continues
from) and, at the end, ``metrics.json`` (spikeport.schemas.Metrics).
"""
from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Optional

import torch
import yaml

from spikeport.data.names import is_pair, parts as dataset_parts
from spikeport.errors import ArtifactError, ConfigError, SpikeportError
from spikeport.io import write_json_atomic, write_text_atomic
from spikeport.schemas import Metrics
from spikeport.train import distributed
from spikeport.train.checkpoint import MODEL_FILE, RESUME_FILE, RESUME_FORMAT, model_payload, \
    read_checkpoint, save_checkpoint
from spikeport.train.config import CHIP_NATIVE_LR, DEFAULT_EPOCHS, DEFAULT_REGULARISERS, FALLBACK_EPOCHS, TrainConfig, \
    read_config_file
from spikeport.train.loop import (FitResult, Stream, StopFlag, evaluate_streams, fit, loss_function, seed_everything,
                                  sigint_checkpoint)
from spikeport.train.models import GAINED_MODELS, build_model, chip_native_lr, default_spec
from spikeport.train.models.chip_native import fold_batch_norm, has_batch_norm
from spikeport.train.models.spec import ChipNativeSpec, ModelSpec, SeedASpec, spec_from_dict

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
#: Event-level augmented copies of the training split (0: none) a dataset gets by default with
#: its default preset; see ``spikeport.data.preprocess.Augment``. Real N-MNIST has none: each
#: batch is augmented afresh instead (config.DEFAULT_REGULARISERS), which validated better than
#: 8 fixed copies and needs no cache.
DEFAULT_AUGMENT: dict[str, int] = {}
#: Datasets whose plain training run folds the validation split into the training data by
#: default (``train_on_val``): the recipe (epochs included) was chosen on validation, and the
#: final model trains on all the non-held-out recordings (real N-MNIST: 800 of 1,000).
DEFAULT_TRAIN_ON_VAL: dict[str, bool] = {"nmnist": True}
#: Chip-native stack width a dataset gets when none is given (``--width`` / config key ``width``).
DEFAULT_WIDTH: dict[str, str] = {"nmnist": "medium"}
#: Datasets whose chip-native models train with a BatchNorm after every conv/dense layer by
#: default (config key ``batch_norm``); it is folded into the weights and biases when training
#: ends, so the saved model, export and the chips see plain layers with bias. Real N-MNIST: chosen
#: on the validation recordings of three folds (bench/tune_real.py; README "Real N-MNIST").
DEFAULT_BATCH_NORM: dict[str, bool] = {"nmnist": True}


def with_batch_norm(spec: ChipNativeSpec) -> ChipNativeSpec:
    """A chip-native spec whose weight layers (conv and dense, the output's too) have ``batch_norm``."""
    layers = [dict(layer) for layer in spec.layers]
    for layer in layers:
        if layer["type"] in ("conv", "dense"):
            layer["batch_norm"] = True
    return spec.replace(layers=layers)


def resolve_options(cli: dict[str, Any], config: Optional[Path]) -> dict[str, Any]:
    """Merge a YAML config with the command line: a value given on the command line wins.

    ``seed`` 0 and the flags ``chip_native``/``ann`` off are the command line's defaults, so they
    yield to the file."""
    opts: dict[str, Any] = read_config_file(config) if config is not None else {}
    for key, value in cli.items():
        if value is None:
            continue
        if key in ("chip_native", "ann") and value is False and key in opts:
            continue
        if key == "seed" and value == 0 and key in opts:
            continue
        opts[key] = value
    for key in ("model", "dataset", "out"):
        if not opts.get(key):
            raise ConfigError(f"{key}: missing (give --{key} or set it in the config file)")
    return opts


def _load_streams(spec: ModelSpec, split: str, root: Optional[Path],
                  max_samples: Optional[int], seed: int, augment: int = 0,
                  progress: bool = True) -> tuple[list[Stream], list[str]]:
    """The ``(x, y)`` streams of a split: one, or for the joint model a visual and an audio one.

    Single-modality data are binned at the spec's bin width (``dt``, from the preset); with
    ``augment`` > 0 the train split gets that many event-level augmented copies appended."""
    from spikeport.data.registry import augmented_tensors, load_tensors
    if spec.model == "joint":
        mods = spec.modalities
        if is_pair(spec.dataset):
            streams = []
            for mod in ("visual", "audio"):
                x, y = load_tensors(mods[mod].dataset, split, root=root, timesteps=mods[mod].timesteps,
                                    max_samples=max_samples, seed=seed)
                streams.append((x, y % spec.label_mod))
        else:
            (xv, xa), y = load_tensors(spec.dataset, split, root=root, timesteps=spec.timesteps,
                                       max_samples=max_samples, seed=seed)
            streams = [(xv, y % spec.label_mod), (xa, y % spec.label_mod)]
        return streams, ["visual", "audio"]
    bin_s = float(spec.dt) if spec.modality in ("visual", "audio") else None
    x, y = load_tensors(spec.dataset, split, root=root, timesteps=spec.timesteps,
                        max_samples=max_samples, seed=seed, bin_s=bin_s, progress=progress)
    if isinstance(x, list):
        x = tuple(x)
    if augment and split == "train" and isinstance(x, torch.Tensor):
        xa, ya = augmented_tensors(spec.dataset, root=root, copies=int(augment),
                                   timesteps=spec.timesteps, max_samples=max_samples, seed=seed,
                                   bin_s=bin_s, progress=progress)
        # counts stay integer in memory (the loop casts each batch): copies x the split fits
        x = torch.cat([x.to(xa.dtype), xa])
        y = torch.cat([y, ya])
    return [(x, y)], [spec.modality]


def data_options(opts: dict[str, Any]) -> dict[str, Any]:
    """The data choices of a run: preset (binning), timesteps, bin width, augmentation copies,
    with the dataset's defaults filled in (``spikeport.data.registry``)."""
    from spikeport.data.registry import DATASETS, preset
    dataset = opts["dataset"]
    name = opts.get("preset") or "default"
    if is_pair(dataset) or dataset not in DATASETS or DATASETS[dataset].modality == "audiovisual":
        if name != "default":
            raise ConfigError(f"preset: only single-modality datasets have presets, not {dataset!r}")
        return {"preset": name, "augment": 0}
    try:
        timesteps, bin_s = preset(dataset, name)
    except SpikeportError as exc:
        raise ConfigError(str(exc)) from None
    if opts.get("timesteps") is not None:
        timesteps = int(opts["timesteps"])
    if opts.get("bin_s") is not None:
        if not isinstance(opts["bin_s"], (int, float)) or isinstance(opts["bin_s"], bool) or not opts["bin_s"] > 0:
            raise ConfigError(f"bin_s: must be a number of seconds > 0, got {opts['bin_s']!r}")
        bin_s = float(opts["bin_s"])
    augment = opts.get("augment")
    if augment is None:
        augment = DEFAULT_AUGMENT.get(dataset, 0) if name == "default" else 0
    if not isinstance(augment, int) or isinstance(augment, bool) or augment < 0:
        raise ConfigError(f"augment: must be an integer >= 0 (augmented copies), got {augment!r}")
    return {"preset": name, "timesteps": int(timesteps), "bin_s": float(bin_s), "augment": int(augment)}


def _train_config(opts: dict[str, Any]) -> TrainConfig:
    values = {k: v for k, v in opts.items() if k in TrainConfig.__dataclass_fields__}
    if "epochs" not in values:
        values["epochs"] = DEFAULT_EPOCHS.get(dataset_parts(opts["dataset"])[0], FALLBACK_EPOCHS)
    for key, value in DEFAULT_REGULARISERS.get(opts["dataset"], {}).items():
        values.setdefault(key, value)
    if "lr" not in values and opts.get("chip_native") and not opts.get("ann") \
            and opts["model"] in GAINED_MODELS:
        values["lr"] = chip_native_lr(opts["model"], opts["dataset"], CHIP_NATIVE_LR)
    return TrainConfig.from_dict(values)


def _check_resume_matches(opts: dict[str, Any], spec: ModelSpec, cfg: dict[str, Any], path: Path) -> None:
    for key in ("model", "dataset", "chip_native", "ann"):
        if key in opts and opts[key] != getattr(spec, key):
            raise ConfigError(f"{key}: {opts[key]!r} differs from the run being resumed ({getattr(spec, key)!r} "
                              f"in {path}); resume continues a run as it was started")
    for key in ("epochs", "batch_size", "lr", "seed"):
        if opts.get(key) is not None and opts[key] != cfg.get(key):
            raise ConfigError(f"{key}: {opts[key]!r} differs from the run being resumed ({cfg.get(key)!r} "
                              f"in {path}); resume continues a run as it was started")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def train_run(model: str, dataset: str, out: Path, chip_native: bool = False, ann: bool = False,
              root: Optional[Path] = None, epochs: Optional[int] = None, batch_size: Optional[int] = None,
              lr: Optional[float] = None, device: Optional[str] = None, seed: int = 0,
              max_samples: Optional[int] = None, resume: bool = False, config: Optional[Path] = None,
              **extra: Any) -> Metrics:
    """Train one model of the zoo into the run folder ``out``; returns the metrics written."""
    cli = dict(model=model, dataset=dataset, out=out, chip_native=chip_native, ann=ann, root=root,
               epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed,
               max_samples=max_samples, **extra)
    opts = resolve_options(cli, config)
    out = Path(opts["out"])
    if opts.get("root") is not None:  # recorded absolute, so later stages find it from anywhere
        opts["root"] = str(Path(opts["root"]).expanduser().resolve())
    root = Path(opts["root"]) if opts.get("root") is not None else None
    if opts.get("max_samples") is not None and (not isinstance(opts["max_samples"], int) or opts["max_samples"] < 1):
        raise ConfigError(f"max_samples: must be an integer >= 1, got {opts['max_samples']!r}")

    state = None
    if resume:
        path = out / RESUME_FILE
        if not path.is_file():
            raise ArtifactError(f"{path}: no checkpoint to resume from (start the run without --resume)")
        state = read_checkpoint(path, RESUME_FORMAT)
        explicit = {k: v for k, v in cli.items() if v is not None and not (k == "seed" and v == 0)
                    and not (k in ("chip_native", "ann") and v is False)}
        try:
            spec = spec_from_dict(state["spec"])
        except ConfigError as exc:
            raise ArtifactError(f"{path}: its spec does not describe a model of this version: {exc}") from None
        _check_resume_matches(explicit, spec, state["config"], path)
        # The data options of the interrupted run (config.yaml) hold unless given again.
        previous = out / CONFIG_FILE
        if previous.is_file():
            saved = yaml.safe_load(previous.read_text()) or {}
            for key in ("max_samples", "root", "augment", "preset", "train_on_val"):
                if opts.get(key) is None and saved.get(key) is not None:
                    opts[key] = saved[key]
            root = Path(opts["root"]) if opts.get("root") is not None else None
        cfg = TrainConfig.from_dict({**state["config"], "device": opts.get("device"),
                                     "progress": opts.get("progress")})
        opts["augment"] = int(opts.get("augment") or 0)
    else:
        cfg = _train_config(opts)
        data = data_options(opts)
        opts["preset"], opts["augment"] = data["preset"], data["augment"]
        if opts.get("chip_native") and not opts.get("width"):
            opts["width"] = DEFAULT_WIDTH.get(opts["dataset"], "small")
        if opts.get("model_options") is not None and not isinstance(opts["model_options"], dict):
            raise ConfigError(f"model_options: must be a mapping of architecture keys to values "
                              f"(e.g. embed_dim: 32), got {opts['model_options']!r}")
        spec = default_spec(opts["model"], opts["dataset"], bool(opts.get("chip_native")),
                            bool(opts.get("ann")), seed=cfg.seed,
                            timesteps=data.get("timesteps", opts.get("timesteps")),
                            width=opts.get("width") or "small",
                            beta=opts.get("beta"), readout=opts.get("readout"),
                            options=opts.get("model_options"))
        if isinstance(spec, SeedASpec):  # recorded in config.yaml too: which head readout this run trained
            opts["readout"] = spec.readout
        if opts.get("batch_norm") is None:
            opts["batch_norm"] = bool(DEFAULT_BATCH_NORM.get(opts["dataset"], False)
                                      and isinstance(spec, ChipNativeSpec))
        if not isinstance(opts["batch_norm"], bool):
            raise ConfigError(f"batch_norm: must be true or false, got {opts['batch_norm']!r}")
        if opts["batch_norm"]:
            if not isinstance(spec, ChipNativeSpec):
                raise ConfigError("batch_norm: only chip-native SNNs (--chip-native, not --ann) take it")
            spec = with_batch_norm(spec)
        if "bin_s" in data:
            spec = spec.replace(dt=data["bin_s"])   # seconds a bin: the data's and the neurons' step
        spec = spec.replace(preset=data["preset"])
        if root is not None:
            # the data's folder travels with the model, so export and deploy read the same data
            spec = spec.replace(root=str(root))

    init_model = None
    if opts.get("finetune_for") is not None or opts.get("init_from") is not None:
        from spikeport.train.qat import prepare_finetune
        init_model, spec = prepare_finetune(opts, spec, resume)
        if init_model is not None and isinstance(spec, ChipNativeSpec) and has_batch_norm(spec):
            init_model, spec = fold_batch_norm(init_model, spec)   # the grid is that of the folded layers
    ctx = distributed.init_from_env(cfg.device)
    try:
        return _train(spec, cfg, opts, out, root, ctx, state, init_model)
    finally:
        distributed.shutdown(ctx)


def _data_record(spec: ModelSpec, opts: dict[str, Any], root: Optional[Path], seed: int) -> dict[str, Any]:
    """What the run's data were: preset, bins, augmentation, root and the split scheme."""
    from spikeport.data.registry import split_scheme
    record: dict[str, Any] = {"preset": spec.preset or "default", "timesteps": int(spec.timesteps),
                              "bin_s": float(spec.dt), "augment": int(opts.get("augment") or 0),
                              "root": str(root) if root is not None else None}
    if not is_pair(spec.dataset):
        try:
            record["split"] = split_scheme(spec.dataset, root, seed)
        except SpikeportError:
            record["split"] = None
    return record


def _train(spec: ModelSpec, cfg: TrainConfig, opts: dict[str, Any], out: Path, root: Optional[Path],
           ctx: distributed.DistContext, state: Optional[dict[str, Any]],
           init_model: Optional[torch.nn.Module] = None) -> Metrics:
    t0 = time.perf_counter()
    max_samples = opts.get("max_samples")
    # Rank 0 loads first: an embedded dataset missing from the cache is generated once, not per rank.
    if not ctx.is_main:
        ctx.barrier()
    augment = int(opts.get("augment") or 0)
    show = cfg.progress is not False
    train, names = _load_streams(spec, "train", root, max_samples, cfg.seed, augment=augment, progress=show)
    val, _ = _load_streams(spec, "val", root, None, cfg.seed, progress=show)
    test, _ = _load_streams(spec, "test", root, None, cfg.seed, progress=show)
    if opts.get("train_on_val") is None:
        opts["train_on_val"] = DEFAULT_TRAIN_ON_VAL.get(spec.dataset, False)
    if init_model is not None or opts.get("finetune_for") is not None:
        opts["train_on_val"] = False  # fine-tuning picks its epoch on val
    if opts.get("train_on_val"):
        # The final fit of a recipe whose epoch count was chosen on val: val joins the training
        # data and the last epoch is kept (no early stopping). The test split stays held out.
        if not all(isinstance(s[0], torch.Tensor) for s in train + val):
            raise ConfigError("train_on_val: only single-tensor datasets (not audio-visual pairs)")
        train = [(torch.cat([t[0], v[0].to(t[0].dtype)]), torch.cat([t[1], v[1]])) for t, v in zip(train, val)]
        val = []
    if ctx.is_main:
        ctx.barrier()

    if ctx.is_main:
        resolved = {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items()}
        resolved.update(cfg.to_dict())
        resolved["timesteps"] = spec.timesteps
        resolved.update(_data_record(spec, opts, root, cfg.seed))
        write_text_atomic(out / CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=False))

    seed_everything(cfg.seed)  # the initial weights depend on the seed only
    model = build_model(spec) if init_model is None else init_model
    n_train = sum(int(s[1].shape[0]) for s in train)
    if ctx.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"training {spec.model}{' (chip-native)' if spec.chip_native else ''}"
              f"{' ANN twin' if spec.ann else ''} on {spec.dataset}: {n_train} samples, "
              f"{n_params} parameters, "
              f"{'no plain training (fine-tuning a trained run)' if init_model is not None else f'{cfg.epochs} epochs'}, "
              f"device {ctx.device}"
              f"{f', {ctx.world_size} processes' if ctx.distributed else ''}", flush=True)

    if init_model is None:
        with sigint_checkpoint(StopFlag()) as stop:
            result = fit(model, spec, train, val, cfg, ctx=ctx, out_dir=out, resume=state, stop=stop,
                         stream_names=names)
    else:  # fine-tuning a trained run: no plain training
        result = FitResult(history=[], best_epoch=0, best_val_accuracy=None)
    if isinstance(spec, ChipNativeSpec) and has_batch_norm(spec):
        # BatchNorm (inference statistics) folded into the weights and biases: model.pt, export,
        # fine-tuning and the chips see plain layers; the outputs are those of the eval-mode model
        model, spec = fold_batch_norm(model, spec)
    finetuned = None
    if opts.get("finetune_for") is not None:
        from spikeport.train.qat import finetune_stage
        finetuned = finetune_stage(model, spec, train, val, cfg, opts, ctx)

    amp = cfg.amp and ctx.device.type == "cuda"
    test_eval = evaluate_streams(model, test, names, loss_function(spec), cfg, ctx, amp)
    wall = float((state or {}).get("wall_s", 0.0)) + time.perf_counter() - t0
    metrics = Metrics(model=spec.model, dataset=spec.dataset, test_accuracy=test_eval["accuracy"],
                      epochs=result.history, seed=cfg.seed, device=_device_name(ctx.device), wall_s=wall,
                      test_loss=test_eval["loss"], test_samples=test_eval["n"], train_samples=n_train,
                      best_epoch=result.best_epoch, best_val_accuracy=result.best_val_accuracy,
                      stopped_early=result.stopped_early, chip_native=spec.chip_native, ann=spec.ann,
                      world_size=ctx.world_size, mixed_precision=amp, config=cfg.to_dict(),
                      data=_data_record(spec, opts, root, cfg.seed),
                      **({"finetune": finetuned} if finetuned is not None else {}),
                      **{f"test_{k}": v for k, v in test_eval.items() if k.startswith("accuracy_")})
    if ctx.is_main:
        save_checkpoint(out / MODEL_FILE, model_payload(
            spec, model.state_dict(), seed=cfg.seed, epoch=result.best_epoch,
            val_accuracy=result.best_val_accuracy))
        write_json_atomic(out / METRICS_FILE, metrics)
        print(f"test accuracy {metrics.test_accuracy:.4f} ({test_eval['n']} samples); "
              f"wrote {out / MODEL_FILE}, {out / METRICS_FILE} in {wall:.1f} s", flush=True)
    ctx.barrier()
    return metrics

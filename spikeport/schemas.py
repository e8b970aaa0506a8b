"""Schemas of the files the stages exchange (ARCHITECTURE.md, "Artifact keys").

Each stage reads the previous stage's files through these models only, so a file written
by another tool (or another version) is checked field by field on read.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
Fraction = Field(ge=0.0, le=1.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- train: runs/<name>/metrics.json -------------------------------------------------------
class EpochRecord(_Strict):
    epoch: int = Field(ge=0)
    train_loss: float
    train_accuracy: float = Fraction
    val_loss: float | None = None
    val_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    lr: float | None = None
    wall_s: float = Field(ge=0.0)


class Metrics(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    model: str
    dataset: str
    test_accuracy: float = Fraction
    epochs: list[EpochRecord]
    seed: int
    device: str
    wall_s: float = Field(ge=0.0)


# --- export: runs/<name>/export/{export.json, partition.json} ------------------------------
class LayerAgreement(_Strict):
    name: str
    agreement: float = Fraction  # fraction of (sample, step, neuron) spike values equal


class Verification(_Strict):
    runtime: str  # the independent runtime that re-read model.nir
    samples: int = Field(ge=1)
    layers: list[LayerAgreement]
    output_agreement: float = Fraction
    exact: bool


class AnnExport(_Strict):
    onnx_file: str
    macs_onnx: int = Field(ge=0)
    macs_torch: int = Field(ge=0)
    max_abs_diff: float = Field(ge=0.0)
    layers: list[dict] = []
    trained: bool | None = None  # False: the twin architecture untrained (MAC counting only)


class ImportInfo(_Strict):
    """How a network made elsewhere came in (`spikeport import`): the two times kept apart."""
    file: str
    format: str                      # "NIR" | "lava-dl netx"
    producer: str | None = None      # the tool named with --from (its conventions applied)
    dt: float = Field(gt=0.0)        # step the graph's continuous-time parameters are discretised with
    dt_source: str
    step_s: float = Field(gt=0.0)    # real time one step lasts (bin width): static power, latency
    step_source: str
    conventions: dict = {}           # reset, spikes per step, membrane floor, fire at threshold
    inputs_file: str | None = None   # a copy of --inputs beside export.json
    netx_file: str | None = None     # a copy of the imported lava-dl network (the Loihi target runs it)
    dataset: str | None = None
    root: str | None = None
    timesteps: int = Field(ge=1)
    bin_ms: float = Field(gt=0.0)
    warnings: list[str] = []


class ExportInfo(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    model: str
    chip_native: bool
    nir_file: str
    dt: float = Field(gt=0.0)
    timesteps: int = Field(ge=1)
    verification: Verification
    ann: AnnExport | None = None
    seed: int
    # NIR neuron convention (spikeport.export.neurons) and what the graph approximates.
    neuron_convention: str | None = None
    approximations: list[str] = []
    imported: ImportInfo | None = None  # set by `spikeport import` (no trained model.pt)


class HostModule(_Strict):
    name: str
    inputs: list[str]  # NIR node names whose spikes (summed over time or per step) feed it
    file: str


class Partition(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    chip_outputs: list[str]
    host: list[HostModule] = []
    host_input: Literal["spike_counts", "spike_trains"] = "spike_counts"


# --- deploy: runs/<name>/deploy/<target>/stats.json ----------------------------------------
class LayerCounts(_Strict):
    name: str
    neurons: int = Field(ge=0)
    synapses: int = Field(ge=0)
    spikes: float = Field(ge=0)
    synops: float = Field(ge=0)
    neuron_updates: float = Field(ge=0)
    kind: str | None = None  # conv | dense | pool | ... (energy profiles may differ per kind)


class Stats(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    target: str
    engine: str
    samples: int = Field(ge=1)
    timesteps: int = Field(ge=1)
    dt: float = Field(gt=0.0)
    accuracy: float = Fraction
    float_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    agreement_with_float: float = Fraction
    cores_used: int = Field(ge=0)
    layers: list[LayerCounts]
    per_sample: list[LayerCounts]
    approximations: list[str] = []
    clipped_weights: int = Field(default=0, ge=0)
    host_macs_per_sample: int = Field(default=0, ge=0)
    step_s: float | None = Field(default=None, gt=0.0)  # real time one step lasts (bin width); None: dt
    conventions: dict | None = None  # neuron conventions simulated (reset, spikes per step, floor)


# --- report: runs/<name>/report/energy.json ------------------------------------------------
class ModeEnergy(_Strict):
    """One side of one comparison mode (sensor_paced or throughput), per inference."""
    joules_per_inference: float = Field(ge=0.0)
    dynamic_joules: float | None = Field(default=None, ge=0.0)
    static_joules: float | None = Field(default=None, ge=0.0)  # static / idle power x static_period_s
    static_period_s: float | None = Field(default=None, ge=0.0)
    latency_s: float | None = Field(default=None, ge=0.0)
    inferences_per_s: float | None = Field(default=None, ge=0.0)
    edp_js: float | None = Field(default=None, ge=0.0)  # energy-delay product
    batch: int | None = Field(default=None, ge=1)
    ratio_vs_baseline: float | None = Field(default=None, ge=0.0)  # chips: baseline J / chip J in this mode
    baseline_joules_per_inference: float | None = Field(default=None, ge=0.0)


class EnergyEntry(_Strict):
    profile: str
    kind: str  # measured | published | estimate (the weakest kind among the figures used)
    joules_per_inference: float = Field(ge=0.0)
    terms: dict[str, float]
    # added by the energy report (optional): the figures used and the assumptions made
    figures: list[dict] = []
    notes: list[str] = []
    counts: dict[str, float] = {}  # what the terms multiply (MACs, bytes, synops, ...)
    sensor_paced: ModeEnergy | None = None  # one sample as it arrives; static power over its real span
    throughput: ModeEnergy | None = None    # flat out; static power only while working


class ChipEnergy(EnergyEntry):
    ratio_vs_baseline: float = Field(ge=0.0)  # baseline joules / chip joules (> 1: the chip spends less)
    estimated: list[str]
    accuracy: float | None = None
    # added by the energy report (optional)
    float_accuracy: float | None = None
    ratio_dynamic_vs_baseline: float | None = Field(default=None, ge=0.0)  # static power left out
    timesteps: int | None = None
    dt: float | None = None
    duration_s: float | None = None  # the real-time span the static term covers
    bin_s: float | None = None  # real time of one step (the data's bin width)
    latency_s: float | None = Field(default=None, ge=0.0)  # chip time per inference, run flat out
    inferences_per_s: float | None = Field(default=None, ge=0.0)
    cores_used: int | None = None
    layers: list[dict] = []  # per layer: name, counts and joules per term


class Energy(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    baseline: EnergyEntry
    chips: dict[str, ChipEnergy]
    # added by the energy report (optional)
    run: str | None = None
    model: str | None = None
    baseline_requested: str | None = None  # e.g. gpu-measured, when it fell back to an estimate
    shortcut: dict | None = None  # the papers' MACs x 4.6 pJ versus synops x 0.9 pJ, labelled
    modes: dict[str, str] | None = None  # what sensor_paced and throughput mean
    other_baselines: dict | None = None  # both modes against every other shipped baseline profile


# --- analyze: runs/<name>/analysis/analysis.json -------------------------------------------
class FeatureSetMetrics(_Strict):
    name: str
    kind: Literal["spike-rate", "continuous"]
    role: str
    source: str
    dim: int = Field(ge=1)
    silhouette: float | None = Field(default=None, ge=-1.0, le=1.0)
    davies_bouldin: float | None = Field(default=None, ge=0.0)
    calinski_harabasz: float | None = Field(default=None, ge=0.0)
    participation_ratio: float | None = Field(default=None, ge=1.0 - 1e-9)
    pcs_90: int | None = Field(default=None, ge=1)
    sparsity: float = Fraction
    note: str | None = None


class RawCosine(_Strict):
    same_class: float | None = None
    other_class: float | None = None
    ratio: float | None = None
    note: str


class AlignmentPair(_Strict):
    kind: Literal["spike-rate", "continuous"]
    this: str
    other: str
    classes: int = Field(ge=2)
    dims: list[int]
    raw_cosine: RawCosine
    rsa_spearman: float | None = Field(default=None, ge=-1.0, le=1.0)


class CrossModal(_Strict):
    pairs: list[AlignmentPair]


class ModelMetrics(_Strict):
    samples: int = Field(ge=1)
    samples_per_class: dict[int, int]
    timesteps: int = Field(ge=1)
    accuracy_on_samples: float = Fraction
    firing_rates: dict[str, float]
    feature_sets: list[FeatureSetMetrics]


class Analysis(ModelMetrics):
    schema_version: Literal[1] = SCHEMA_VERSION
    cross_modal: CrossModal | None = None
    other_metrics: ModelMetrics | None = None  # the --other run's (or a joint run's audio side)
    figures: dict[str, str]

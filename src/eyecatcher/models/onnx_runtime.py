"""ONNX export, int8 post-training quantization and inference with ONNX Runtime.

Quantization goes through ONNX Runtime rather than ``torch.ao.quantization`` (deprecated) or
torchao (an extra dependency that did not win on this project's CPUs); ``docs/quantization.md``
has the measurements behind that choice. The same :class:`OnnxClassifier` runs the fp32 and the
int8 model, in the quantization benchmark and in the served model alike, so both precisions are
compared (and later served) by one runtime with one set of thread settings.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from eyecatcher import storage
from eyecatcher.models.softmax import softmax

logger = logging.getLogger(__name__)

#: Quantization methods this module implements (see :func:`quantize_onnx`).
QuantizationMethod = Literal["static", "dynamic"]
METHODS: tuple[str, ...] = ("static", "dynamic")

#: Opset used for export: old enough for every ONNX Runtime quantizer, new enough for ViT ops.
DEFAULT_OPSET = 17


class QuantizationError(RuntimeError):
    """Export or quantization of a model failed.

    Attributes:
        stage: Where it failed: ``export``, ``preprocess``, ``calibration`` or ``quantize``.
        detail: The underlying error, as text.
    """

    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(f"{stage} failed: {detail}")
        self.stage = stage
        self.detail = detail


def export_onnx(
    model: torch.nn.Module,
    input_size: tuple[int, int, int] | list[int],
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    output_name: str = "logits",
) -> Path:
    """Export an image classifier to ONNX with a dynamic batch dimension.

    The TorchScript-based exporter (``dynamo=False``) is used because its graphs are the ones
    ONNX Runtime's quantization tools are tested on; the input is called ``images`` and the
    output ``logits``.

    Args:
        model: The fp32 classifier; it is put in eval mode.
        input_size: ``(channels, height, width)`` of one image.
        path: Where to write the ``.onnx`` file.
        opset: ONNX opset version.
        output_name: Name of the graph's output (``features`` for a feature extractor).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        QuantizationError: With ``stage="export"`` if the exporter fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((1, *[int(v) for v in input_size]), dtype=torch.float32)
    try:
        with torch.no_grad():
            torch.onnx.export(
                model.eval(),
                (example,),
                str(path),
                input_names=["images"],
                output_names=[output_name],
                dynamic_axes={"images": {0: "batch"}, output_name: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    except Exception as exc:  # any exporter error means "this model cannot be exported"
        raise QuantizationError("export", f"{type(exc).__name__}: {exc}") from exc
    return path


#: Outputs of fused contrib operators (``SkipLayerNormalization``, ``BiasGelu``: a graph from
#: ONNX Runtime's transformer optimizer) have no inferred type; they are float32 here.
_CONTRIB_OPS_OPTIONS = {"DefaultTensorType": 1}  # onnx.TensorProto.FLOAT


class _PreProcessingHint(logging.Filter):
    """Drops ONNX Runtime's "consider pre-processing" warning (logged on the root logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "consider to run pre-processing" not in record.getMessage()


def _calibration_reader(input_name: str, calibration: np.ndarray, batch_size: int) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _BatchReader(CalibrationDataReader):
        """Feeds the calibration images to ONNX Runtime's calibrator in fixed-size batches."""

        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(
                calibration[start : start + batch_size]
                for start in range(0, len(calibration), batch_size)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: np.ascontiguousarray(batch)}

    return _BatchReader()


def quantize_onnx(
    fp32_path: str | Path,
    int8_path: str | Path,
    *,
    method: QuantizationMethod = "static",
    calibration: np.ndarray | None = None,
    per_channel: bool = True,
    reduce_range: bool = False,
    calibration_batch_size: int = 8,
) -> Path:
    """Quantize an fp32 ONNX classifier to int8 with ONNX Runtime.

    ``static`` writes a QDQ model with int8 weights (per channel by default) and uint8
    activations whose ranges come from ``calibration`` (MinMax calibration); ``dynamic`` keeps
    fp32 activations, computes their ranges at run time and quantizes only MatMul/Gemm weights
    (its ConvInteger kernels are several times slower than fp32 convolutions on CPUs without
    VNNI, so convolutions stay fp32). ``static`` first runs ONNX Runtime's ``quant_pre_process``
    (shape inference and graph optimisation): without it, exported convolutions whose weights
    are not plain initializers cannot be quantized. ``dynamic`` quantizes the exported graph as
    it is and pre-processes only if a MatMul/Gemm weight was left in fp32
    (:func:`weight_matmuls_left`) or the quantizer refused the graph: on this project's exports
    both ways give the same graph and bit-identical logits, and pre-processing ViT-B/16 alone
    takes longer than quantizing it.

    Args:
        fp32_path: The exported fp32 model.
        int8_path: Where to write the int8 model.
        method: ``"static"`` or ``"dynamic"``.
        calibration: Preprocessed images, ``(N, C, H, W)`` float32; required for ``static``.
        per_channel: Quantize weights per output channel rather than per tensor.
        reduce_range: Use 7-bit weights, which avoids int16 saturation in the u8s8 kernels of
            CPUs without VNNI at a small cost in resolution.
        calibration_batch_size: Images per calibration forward pass.

    Returns:
        ``int8_path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: For an unknown method, or ``static`` without calibration images.
        QuantizationError: If pre-processing, calibration or quantization fails.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown quantization method {method!r}; expected one of {METHODS}.")
    if method == "static" and (calibration is None or len(calibration) == 0):
        raise ValueError("Static quantization needs at least one calibration image.")
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    weights = {"per_channel": per_channel, "reduce_range": reduce_range}
    if method == "dynamic":
        why = _dynamic_as_exported(fp32_path, int8_path, weights)
        if why is None:
            return int8_path
        logger.info("Dynamic int8 without pre-processing: %s; pre-processing first", why)
    with tempfile.TemporaryDirectory(prefix="eyecatcher-quant-") as scratch:
        prepared = _pre_processed(fp32_path, Path(scratch) / "prepared.onnx")
        try:
            if method == "static":
                _quantize_static(prepared, int8_path, calibration, calibration_batch_size, weights)
            else:
                _quantize_dynamic(prepared, int8_path, weights)
        except Exception as exc:  # an operator the quantizer cannot handle, a bad graph, ...
            raise QuantizationError("quantize", f"{type(exc).__name__}: {exc}") from exc
    return int8_path


def _quantize_dynamic(source: str | Path, int8_path: Path, weights: dict[str, bool]) -> None:
    """Dynamic int8 of the MatMul/Gemm weights only (``weights``: per_channel, reduce_range)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(int8_path),
        op_types_to_quantize=["MatMul", "Gemm"],
        weight_type=QuantType.QInt8,
        extra_options=_CONTRIB_OPS_OPTIONS,
        **weights,
    )


def _quantize_static(
    prepared: Path,
    int8_path: Path,
    calibration: np.ndarray | None,
    batch_size: int,
    weights: dict[str, bool],
) -> None:
    """Static QDQ int8: int8 weights, uint8 activations with MinMax-calibrated ranges."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    input_name = OnnxClassifier(prepared).input_name
    quantize_static(
        str(prepared),
        str(int8_path),
        _calibration_reader(input_name, calibration, batch_size),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options=_CONTRIB_OPS_OPTIONS,
        **weights,
    )


def _dynamic_as_exported(
    fp32_path: str | Path, int8_path: Path, weights: dict[str, bool]
) -> str | None:
    """Dynamic int8 of the graph as exported: ``None`` when it is complete, else why not.

    Dynamic quantization only needs MatMul/Gemm weights to be initializers, which they are in
    a constant-folded export: pre-processing (most of the time of ViT-B/16, ~16 s) then yields
    the same graph and bit-identical logits. It is needed only when a weight MatMul/Gemm was
    left in fp32, or when the quantizer refuses the exported graph.
    """
    hint = _PreProcessingHint()
    root = logging.getLogger()
    root.addFilter(hint)  # the check below is what that hint asks for
    try:
        _quantize_dynamic(fp32_path, int8_path, weights)
        left = weight_matmuls_left(int8_path)
        return f"{left} MatMul/Gemm weights were left in fp32" if left else None
    except Exception as exc:  # pre-processing may make a graph the quantizer can handle
        return f"{type(exc).__name__}: {exc}"
    finally:
        root.removeFilter(hint)


def _pre_processed(fp32_path: str | Path, prepared: Path) -> Path:
    """ONNX Runtime's ``quant_pre_process`` (shape inference, graph optimisation) of a graph.

    Raises:
        QuantizationError: ``preprocess`` stage, if it fails.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
    except Exception as exc:
        raise QuantizationError("preprocess", f"{type(exc).__name__}: {exc}") from exc
    return prepared


def weight_matmuls_left(model: str | Path) -> int:
    """MatMul/Gemm nodes of a graph whose weight (second input) is constant: fp32 weights.

    In a dynamically quantized graph every such node should have become an integer one; the
    MatMuls left are activation x activation (attention). A weight counts as constant when it
    is an initializer or comes only from constants (e.g. a Transpose of an initializer that
    pre-processing would fold).
    """
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    constant = {init.name for init in graph.initializer}
    left = 0
    for node in graph.node:  # topologically sorted, as ONNX requires
        if node.op_type in {"MatMul", "Gemm"} and len(node.input) > 1 and node.input[1] in constant:
            left += 1
        if node.op_type == "Constant" or (
            node.input and all(name in constant for name in node.input if name)
        ):
            constant.update(node.output)
    return left


def session_options(threads: int | None, *, spinning: bool = True) -> Any:
    """ONNX Runtime session options with a fixed thread count (``None``: runtime default).

    Fixing the intra-op threads and running the graph sequentially makes latencies of two
    models comparable on a shared machine.

    Args:
        threads: Intra-op threads.
        spinning: Let idle worker threads busy-wait for the next call (ONNX Runtime's default:
            lowest latency for one model). Turn it off when several sessions take turns, as in
            a round-robin benchmark, or one session's spinning threads slow down the next.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


#: ONNX Runtime's GPU provider; only the ``onnxruntime-gpu`` package ships it.
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

# Which provider choice was already logged: once per process, not once per session.
_announced: set[str] = set()


def _announce(level: int, message: str) -> None:
    if message not in _announced:
        _announced.add(message)
        logger.log(level, message)


def execution_providers(device: str = "auto") -> list[str]:
    """ONNX Runtime providers for ``device``, in order of preference.

    Args:
        device: ``auto`` (CUDA when the installed ONNX Runtime has the CUDA provider, else the
            CPU, with a log line either way), ``cuda`` (an error without the provider) or
            ``cpu``.

    Returns:
        Provider names for ``InferenceSession(providers=...)``; the CPU provider is always
        last, so operators the CUDA provider lacks still run.

    Raises:
        ValueError: For an unknown ``device``, or ``cuda`` without the CUDA provider.
    """
    import onnxruntime as ort

    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"ONNX Runtime device must be 'auto', 'cuda' or 'cpu', not {device!r}.")
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER in available:
        _announce(logging.INFO, "ONNX Runtime: running on CUDA (CUDAExecutionProvider)")
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device == "cuda":
        raise ValueError(
            f"ONNX Runtime has no {CUDA_PROVIDER} (available: {available}); install "
            "onnxruntime-gpu in place of onnxruntime, or use device 'auto' or 'cpu'."
        )
    gpu = torch.cuda.is_available()
    _announce(
        logging.WARNING if gpu else logging.INFO,
        "ONNX Runtime: CUDAExecutionProvider not available"
        + (" although a CUDA GPU is (install onnxruntime-gpu)" if gpu else "")
        + "; running on the CPU",
    )
    return [CPU_PROVIDER]


class OnnxClassifier:
    """An ONNX image classifier (fp32 or int8) run by ONNX Runtime (CUDA when available).

    Reads like a fitted scikit-learn estimator: configuration in ``__init__``, the inference
    session (state) in ``session_``. Inputs are batches produced by
    :func:`eyecatcher.preprocessing.images_to_batch` (as NumPy), so serving preprocesses
    exactly like training and the quantization benchmark.

    Args:
        model: Path or URL (``s3://``, read through :mod:`eyecatcher.storage` with the default
            credential chain and ``AWS_ENDPOINT_URL``) of a ``.onnx`` file, or its serialized
            bytes.
        threads: Intra-op threads (``None``: ONNX Runtime's default, one per core).
        spinning: See :func:`session_options` (keep the default for serving).
        device: ``auto``, ``cuda`` or ``cpu``: see :func:`execution_providers`.

    Attributes:
        session_: The ``onnxruntime.InferenceSession``.
        input_name: Name of the image input.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        threads: int | None = None,
        spinning: bool = True,
        device: str = "auto",
    ) -> None:
        import onnxruntime as ort

        self.model = model
        self.threads = threads
        self.spinning = spinning
        self.device = device
        source = model if isinstance(model, bytes) else str(model)
        if isinstance(source, str) and not storage.is_local(source):
            source = storage.read_bytes(source)  # ONNX Runtime reads local files or bytes
        self.session_ = ort.InferenceSession(
            source,
            sess_options=session_options(threads, spinning=spinning),
            providers=execution_providers(device),
        )
        self.input_name: str = self.session_.get_inputs()[0].name

    def predict_logits(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Raw class scores, ``(N, n_classes)`` float32, for a ``(N, C, H, W)`` batch."""
        if isinstance(batch, torch.Tensor):
            batch = batch.detach().cpu().numpy()
        array = np.ascontiguousarray(batch, dtype=np.float32)
        if array.ndim != 4:
            raise ValueError(f"Expected a (N, C, H, W) batch, got shape {array.shape}.")
        return self.session_.run(None, {self.input_name: array})[0]

    def predict_proba(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class probabilities (softmax of the logits), ``(N, n_classes)``, rows sum to 1."""
        return softmax(self.predict_logits(batch)).astype(np.float32)

    def predict(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Index of the most probable class for each image."""
        return self.predict_logits(batch).argmax(axis=1)


def graph_agreement(expected: np.ndarray, got: np.ndarray, tolerance: float) -> tuple[float, float]:
    """How far an exported graph's outputs are from PyTorch's, and how far they may be.

    The allowed difference is ``tolerance`` times the largest PyTorch output (or times 1 for
    outputs below 1): float reassociation in fused kernels grows with the outputs' scale.

    Args:
        expected: PyTorch's outputs.
        got: The graph's outputs for the same inputs.
        tolerance: Relative tolerance.

    Returns:
        ``(max_abs_diff, allowed_diff)``; the shapes must match (``inf`` difference if not).
    """
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    allowed = tolerance * max(1.0, scale)
    if got.shape != expected.shape:
        return float("inf"), allowed
    return (float(np.abs(expected - got).max()) if expected.size else 0.0), allowed


#: Prefix of the metadata keys this project writes into ONNX files.
METADATA_PREFIX = "eyecatcher."


def with_metadata(model: bytes, metadata: dict[str, str]) -> bytes:
    """The serialized ONNX model with ``metadata`` added to its ``metadata_props``.

    Keys are prefixed with ``eyecatcher.``; an existing key of the same name is replaced. The
    graph and weights are untouched, so the model computes exactly what it did.

    Args:
        model: A serialized ONNX model.
        metadata: ``{key: value}`` strings, e.g. the fingerprints of the model's inputs.

    Returns:
        The serialized model with the metadata.
    """
    import onnx

    proto = onnx.load_from_string(model)
    keys = {METADATA_PREFIX + key for key in metadata}
    kept = [entry for entry in proto.metadata_props if entry.key not in keys]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in sorted(metadata.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, str(value)
    return proto.SerializeToString()


def read_metadata(model: str | Path | bytes) -> dict[str, str]:
    """The ``eyecatcher.`` metadata of an ONNX model (a file or its bytes), prefix removed."""
    import onnx

    if isinstance(model, bytes | bytearray):
        proto = onnx.load_from_string(bytes(model))
    elif not storage.is_local(str(model)):
        proto = onnx.load_from_string(storage.read_bytes(str(model)))
    else:
        proto = onnx.load(str(model), load_external_data=False)
    return {
        entry.key[len(METADATA_PREFIX) :]: entry.value
        for entry in proto.metadata_props
        if entry.key.startswith(METADATA_PREFIX)
    }

"""Export a run's network as one file that other programs run without deepnet.

The exported graph takes what image libraries give: **uint8 pixels (batch, height, width,
channels), channels last** (``np.asarray(PIL.Image.open(f))`` stacked), scales them by the
run's 1/255 and reorders them to the network's (batch, channels, height, width) itself, and
returns **probabilities (batch, classes)** (the softmax of the logits). So a program needs
only to bring its images to the recorded size and channels, which the file's metadata
states: class names, input size (h, w), channels, scaling and the run's resize/grayscale
conversions (``ExportMetadata``; ONNX ``metadata_props``, TorchScript extra file
``deepnet.json``). The batch dimension is dynamic. An ensemble refit that chose the ensemble
exports as one graph: every member's softmax, averaged (``deepnet.members`` says how many).

ONNX needs the ``onnx`` package (``pip install 'deepnet[export]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from deepnet.data.options import Preprocessing
from deepnet.ensemble import EnsembleNet
from deepnet.errors import ConfigError, RunExistsError, RunFormatError
from deepnet.runs import SavedRun, load_run, replacing

if TYPE_CHECKING:
    from types import ModuleType

INSTALL_HINT = "pip install 'deepnet[export]'"
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
METADATA_FILE = "deepnet.json"  # TorchScript's extra file
OPSET = 17


class ExportFormat(enum.Enum):
    """The file formats a run exports to, by the name --format takes."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"

    @property
    def suffix(self) -> str:
        return ".onnx" if self is ExportFormat.ONNX else ".pt"


@dataclass(frozen=True)
class ExportMetadata:
    """What an exported file says about its input and output, as string key-value pairs."""

    class_names: tuple[str, ...]  # output column i is class_names[i]
    preprocessing: Preprocessing
    members: int = 1  # networks whose probabilities the graph averages

    def to_strings(self) -> dict[str, str]:
        height, width = self.preprocessing.image_shape
        channels = self.preprocessing.channels
        return {
            "deepnet.class_names": json.dumps(list(self.class_names)),
            "deepnet.preprocessing": json.dumps(self.preprocessing.to_dict()),
            "deepnet.input": (
                f"{INPUT_NAME}: uint8 (batch, {height}, {width}, {channels}) pixels 0..255, "
                f"channels last; scaled by {self.preprocessing.scale:.8g} inside"
            ),
            "deepnet.output": f"{OUTPUT_NAME}: float32 (batch, {len(self.class_names)}), "
            "columns in deepnet.class_names order",
            "deepnet.members": str(self.members),
        }

    @classmethod
    def from_strings(cls, strings: dict[str, str]) -> ExportMetadata:
        return cls(
            tuple(json.loads(strings["deepnet.class_names"])),
            Preprocessing.from_dict(json.loads(strings["deepnet.preprocessing"])),
            int(strings.get("deepnet.members", 1)),  # files written before ensembles: 1
        )


class PixelModel(nn.Module):
    """The run's model behind the input and output the export promises: uint8 NHWC
    pixels in, probabilities out (an ensemble's log-probabilities softmax back to them)."""

    def __init__(self, network: nn.Module, scale: float):
        super().__init__()
        self.network = network
        self.scale = scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32) * self.scale
        return torch.softmax(self.network(x), dim=1)


def export_run(
    run: SavedRun | str | Path,
    out: str | Path | None = None,
    format: ExportFormat | str = ExportFormat.ONNX,
) -> Path:
    """Write ``run``'s model (an ensemble refit's chosen one) to ``out`` (default
    RUN/model.onnx or RUN/model.pt) in ``format``; an existing file is never overwritten.
    Returns the file written."""
    format = _format(format)
    if format is ExportFormat.ONNX:
        _onnx()  # not installed: say so before any work
    run = run if isinstance(run, SavedRun) else load_run(run)
    out = Path(out) if out is not None else run.path / f"model{format.suffix}"
    if out.exists():
        raise RunExistsError(
            f"{out} already exists; deepnet never overwrites it. Choose another --out, or "
            "delete the file first."
        )
    preprocessing = run.data.preprocessing
    network = run.model()
    members = len(network.networks) if isinstance(network, EnsembleNet) else 1
    metadata = ExportMetadata(run.data.class_names, preprocessing, members)
    model = PixelModel(network, preprocessing.scale).eval()
    example = torch.zeros(
        (2, *preprocessing.image_shape, preprocessing.channels), dtype=torch.uint8
    )
    write = _write_onnx if format is ExportFormat.ONNX else _write_torchscript
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with replacing(out) as tmp, _deprecations_quieted():
            write(model, example, metadata, tmp)
    except OSError as exc:
        raise RunExistsError(f"cannot write {out}: {exc}. Choose a writable --out.") from exc
    return out


def _format(format: ExportFormat | str) -> ExportFormat:
    try:
        return ExportFormat(format)
    except ValueError:
        names = " or ".join(f.value for f in ExportFormat)
        raise ConfigError(f"format={format!r} is not an export format: choose {names}.") from None


def _write_torchscript(
    model: nn.Module, example: torch.Tensor, metadata: ExportMetadata, to: Path
) -> None:
    traced = torch.jit.trace(model, (example,))
    torch.jit.save(traced, str(to), _extra_files={METADATA_FILE: json.dumps(metadata.to_strings())})


def _write_onnx(
    model: nn.Module, example: torch.Tensor, metadata: ExportMetadata, to: Path
) -> None:
    onnx = _onnx()
    buffer = io.BytesIO()
    batch = {0: "batch"}
    torch.onnx.export(
        model,
        (example,),
        buffer,
        dynamo=False,  # the dynamo exporter needs onnxscript as well; this one does not
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: batch, OUTPUT_NAME: batch},
        opset_version=OPSET,
    )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.to_strings().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(to))


def read_metadata(path: str | Path) -> ExportMetadata:
    """The metadata of a file ``export_run`` wrote (.onnx or TorchScript .pt)."""
    path = Path(path)
    try:
        if path.suffix == ExportFormat.ONNX.suffix:
            proto = _onnx().load(str(path), load_external_data=False)
            strings = {p.key: p.value for p in proto.metadata_props}
        else:
            extra = {METADATA_FILE: ""}
            with _deprecations_quieted():
                torch.jit.load(str(path), _extra_files=extra)
            strings = json.loads(extra[METADATA_FILE])
        return ExportMetadata.from_strings(strings)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise RunFormatError(
            f"{path} holds no deepnet export metadata ({str(exc).splitlines()[0]}); pass a "
            "file that deepnet export wrote."
        ) from exc


def _onnx() -> ModuleType:
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            f"exporting to ONNX needs the onnx package, which is not installed: {INSTALL_HINT}."
        ) from None
    return onnx


@contextlib.contextmanager
def _deprecations_quieted() -> Iterator[None]:
    """torch 2.13 deprecates TorchScript and its ONNX exporter (for torch.export, which
    needs onnxscript too); both still work, and the warning is for deepnet, not its user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield

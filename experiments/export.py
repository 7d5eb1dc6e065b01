"""Export a trained detector with torch.export and to ONNX, and check both against eager.

    python -m experiments.export --config work_dirs/run/config.json \
        --checkpoint work_dirs/run/latest.pth --image blood.jpg --out-dir work_dirs/run/export

The graph takes the test pipeline's tensor of one image (normalized, padded; its size is fixed
by --image) and returns boxes (xyxy, in that tensor's frame: divide by the pipeline's scale
factor for original pixels), scores and labels. Not exported: the pipeline itself, other input
sizes, batches of several images, masks, test-time augmentation. ONNX needs
``pip install 'detfn[export]'`` (onnx, onnxscript; onnxruntime to run the check).
"""

from __future__ import annotations

from dataclasses import dataclass

import tyro

from detfn.analysis.export import DEFAULT_OPSET, ExportError
from detfn.apis import load_detector
from detfn.apis.exporting import ExportReport, export_detector


@dataclass(frozen=True)
class ExportArgs:
    config: str
    """the run's config.json"""
    checkpoint: str
    """the weights to export"""
    image: str
    """an example image: fixes the input size and is the check's input"""
    out_dir: str = "export"
    opset: int = DEFAULT_OPSET
    """ONNX opset (>= 17)"""
    onnx: bool = True
    """also write model.onnx"""
    check: bool = True
    """run the exported graphs and print their largest difference to eager PyTorch"""
    tolerance: float = 1e-4
    """largest accepted difference of boxes and scores"""


def main(args: ExportArgs) -> ExportReport:
    detector = load_detector(args.config, args.checkpoint, "cpu")
    try:
        report = export_detector(
            detector, args.image, args.out_dir, args.onnx, args.check, args.opset
        )
    except (ExportError, ImportError, ValueError) as error:
        raise SystemExit(f"export failed: {error}") from None
    print(f"input {report.input_shape}, {report.num_detections} detections")
    for kind, path in report.files.items():
        print(f"{kind}: {path}")
    for kind, diffs in report.differences.items():
        print(f"{kind} vs eager: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
        if max(diffs["boxes"], diffs["scores"]) > args.tolerance or diffs["labels"]:
            raise SystemExit(f"{kind} differs from eager beyond {args.tolerance}: {diffs}")
    return report


if __name__ == "__main__":
    main(tyro.cli(ExportArgs, description=__doc__))

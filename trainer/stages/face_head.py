"""Stage `face_head`: the face ResNet's own softmax layer as a graph of its own, served as
the face expert (of silent clips, and of late fusion) on each summary face's features.

Why a head of its own: the fusion classifier's face-only view reads the IZOA-masked features
of 8 summary steps and was trained on pseudo-pairs; on held-out FER2013 stills it answered
0.626 through the service where the ResNet's own flip-averaged softmax, on the same features,
answers 0.67 (and 0.79 on RAF-DB's photos, which the classifier's pairs never show). The
head is linear on the flip-averaged features, so its logits are the flip-averaged logits.
Per summary face it answers once; `service.model.calibration.confidence_pool` pools a
clip's faces by the confidence each carries."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.model.calibration import confidence_pool
from service.pipeline.fusion import face_rows
from trainer.export import ExportResult, export_onnx
from trainer.face.graphs import head_model
from trainer.stages import BuildContext, stage_output
from trainer.stages.faces import FaceBackbone, FaceFeatures


def face_head_view(head, data: dict[str, np.ndarray], cfg) -> tuple[np.ndarray, np.ndarray]:
    """The face head's pooled answers on the face-only rows of `data` (the rows the
    classifier's face view scores, in the same order)."""
    rows = data["view"] == "face"
    p = [confidence_pool(head.run(face_rows(x, cfg))) for x in data["X"][rows]]
    return data["y"][rows], np.stack(p).astype(np.float32) if p else np.zeros((0, 0), np.float32)


@stage_output
@dataclass
class FaceHead:
    export: ExportResult


def face_head(ctx: BuildContext, backbone: FaceBackbone, faces: FaceFeatures) -> FaceHead:
    sample = faces.features["train"][:64, 0].astype(np.float32)
    return FaceHead(export_onnx(head_model(backbone.head["kernel"], backbone.head["bias"]),
                                ctx.staging / "face_head.onnx", sample_inputs=sample,
                                input_name="features", output_name="probabilities"))

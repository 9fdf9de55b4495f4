"""OCR with the models bundled in the `rapidocr` wheel (PP-OCR det/cls/rec, ONNX). Never downloads.

rapidocr's default config resolves its models through a download helper that fetches anything missing.
We pass the bundled files by explicit path instead, so a missing file is a clear ModelNotAvailable and
never a network call. The engine is loaded lazily, once per process.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import ModelNotAvailable

DPI = 200
MAX_PIXELS = 24_000_000  # rendering budget per page; bigger pages are rendered at a lower dpi
_MODEL_FILES = {
    "Det": "PP-OCRv6_det_small.onnx",
    "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    "Rec": "PP-OCRv6_rec_small.onnx",
}

_engine: Any = None
_lock = threading.Lock()


@dataclass(slots=True)
class OcrLine:
    """A recognised line; the box is in the page's coordinates (points)."""

    x0: float
    y0: float
    x1: float
    y1: float
    text: str
    score: float


def model_files() -> dict[str, Path]:
    """The bundled model files, by rapidocr stage; ModelNotAvailable when the wheel lacks one."""
    try:
        import rapidocr
    except ImportError as exc:
        raise ModelNotAvailable(
            "OCR needs the 'rapidocr' and 'onnxruntime' packages: pip install rapidocr onnxruntime"
        ) from exc
    root = Path(rapidocr.__file__).parent / "models"
    files = {stage: root / name for stage, name in _MODEL_FILES.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ModelNotAvailable(
            f"rapidocr's bundled OCR models are missing ({', '.join(missing)}); reinstall rapidocr, "
            "or set ingest.ocr = false"
        )
    return files


def _threads() -> int:
    # Parser workers already use every core between them; one thread each avoids oversubscription.
    if multiprocessing.parent_process() is not None:
        return 1
    return min(4, os.cpu_count() or 1)


def get_engine() -> Any:
    """The process's RapidOCR engine, built on first use from the bundled model files."""
    global _engine
    if _engine is None:
        with _lock:
            if _engine is None:
                files = model_files()
                from rapidocr import RapidOCR

                threads = _threads()
                _engine = RapidOCR(
                    params={
                        "Global.log_level": "critical",
                        "Global.use_cls": False,  # rendered pages are upright; skipping cls saves ~15%
                        "Det.model_path": str(files["Det"]),
                        "Cls.model_path": str(files["Cls"]),
                        "Rec.model_path": str(files["Rec"]),
                        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                    }
                )
    return _engine


def render_dpi(width_pt: float, height_pt: float, dpi: int = DPI, max_pixels: int = MAX_PIXELS) -> int:
    """The dpi to render a page at: `dpi`, lowered so the image stays within the pixel budget."""
    pixels = (width_pt * dpi / 72) * (height_pt * dpi / 72)
    if pixels <= max_pixels:
        return dpi
    return max(36, int(dpi * (max_pixels / pixels) ** 0.5))


def ocr_page(page: Any, dpi: int = DPI) -> list[OcrLine]:
    """Render a PyMuPDF page and recognise its text lines (page coordinates, top to bottom)."""
    import numpy as np

    rect = page.rect
    use_dpi = render_dpi(rect.width, rect.height, dpi)
    pix = page.get_pixmap(dpi=use_dpi, alpha=False)
    img = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width, pix.n)
    if pix.n == 1:
        img = np.repeat(img, 3, axis=2)
    elif pix.n == 3:
        img = np.ascontiguousarray(img[:, :, ::-1])  # RGB -> BGR, what the engine's loader expects
    result = get_engine()(img)
    if result.boxes is None or not result.txts:
        return []
    scale = 72.0 / use_dpi
    lines = []
    for box, text, score in zip(result.boxes, result.txts, result.scores):
        xs = [float(p[0]) for p in box]
        ys = [float(p[1]) for p in box]
        lines.append(
            OcrLine(
                rect.x0 + min(xs) * scale,
                rect.y0 + min(ys) * scale,
                rect.x0 + max(xs) * scale,
                rect.y0 + max(ys) * scale,
                str(text),
                float(score),
            )
        )
    return lines

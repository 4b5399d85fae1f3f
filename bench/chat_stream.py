"""The machine-oriented chat stream on real clips: its bitrate against a human-quality stream,
whether answers survive it, and where an answer's time goes.

    .venv/bin/python bench/chat_stream.py [--server] [--hevc] [--json OUT.json]

On the self-test's real clips (the Sintel trailer, the bus photo panned into a clip, Sintel
with a drawn sign) and its questions with known answers, prints:
- per question window: the machine stream's kbps (H.264, or H.265 with --hevc) beside a
  human-quality H.264 stream of the same window (libx264 CRF 23, preset medium, the source
  frame rate, full size) and their ratio — goal ≤ 1/10;
- per bitrate rung: accuracy and the share of questions answered the same (right or wrong)
  as from the uncompressed frames — goal ≥ 95 % at the operating point (640/crf36, the
  encoder's default);
- the answer latency split into encode, transfer and inference (and perception on the
  decoded frames, the text-only model's eyes), for the embedded model in process and, with
  --server, for the same model behind llama-cpp-python's OpenAI-compatible server on
  localhost; plus what the stream's bytes would take on a 1 Mbit/s uplink.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.chat.codec import human_quality_kbps  # noqa: E402
from core.chat.encoder import EncoderSettings  # noqa: E402
from core.chat.selftest import (LADDER, QUESTIONS, SelfTestRequest, format_report, prepare_clips,  # noqa: E402
                                run_selftest)
from core.jobs import HeadlessState  # noqa: E402

CACHE = Path(os.environ.get("KESTREL_BENCH_CACHE", Path.home() / ".cache" / "kestrel" / "bench")) / "chat"
OPERATING = ("640/crf36", EncoderSettings())


def _server(model_path: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--model_alias",
                             "qwen", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads",
                             "2", "--verbose", "False"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start (pip install 'llama-cpp-python[server]')")


def _latency(rows, label: str) -> str:
    med = {k: statistics.median(getattr(r, k) for r in rows) for k in ("encode_s", "transfer_s", "inference_s",
                                                                        "perceive_s")}
    return (f"{label:34s} encode {med['encode_s']:.2f} s, transfer {med['transfer_s']:.3f} s, inference "
            f"{med['inference_s']:.2f} s, perception on decoded frames {med['perceive_s']:.2f} s (medians)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", action="store_true", help="also answer through llama-cpp-python's server")
    ap.add_argument("--hevc", action="store_true", help="also measure the operating point with H.265 (libx265)")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    from models.llm.local import LocalLLM, model_file

    t0 = time.perf_counter()
    clips = prepare_clips(CACHE)
    print(f"clips and their perception ready in {time.perf_counter() - t0:.0f} s "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    llm = LocalLLM()
    ladder = [LADDER[0], OPERATING] + list(LADDER[1:])
    if args.hevc:
        ladder.insert(2, ("640/crf36 h265", replace(OPERATING[1], codec="hevc")))
    t0 = time.perf_counter()
    rep = run_selftest(SelfTestRequest(llm, clips, ladder=ladder, max_tokens=60, human_reference=False),
                       HeadlessState(bar=True, label="self-test"))
    print(f"self-test: {len(QUESTIONS)} questions × {len(ladder) + 1} streams in {time.perf_counter() - t0:.0f} s\n")
    print(format_report(rep))

    # -- kbps against a human-quality stream of the same windows --------------------------------
    print("\nbitrate per question window at the operating point (machine vs human-quality H.264, CRF 23):")
    op = next(r for r in rep.rungs if r.name == OPERATING[0])
    rows, tot_m, tot_h, tot_s = [], 0.0, 0.0, 0.0
    for r in op.results:
        clip = clips[r.qa.clip]
        start = max(0.0, r.qa.at - r.qa.window_s)
        human = human_quality_kbps(clip.path, start=start, end=r.qa.at)
        ratio = r.kbps / human if human else float("nan")
        tot_m += r.bytes * 8 / 1000
        tot_h += human * r.stream_s
        tot_s += r.stream_s
        rows.append({"question": r.qa.question, "clip": r.qa.clip, "machine_kbps": round(r.kbps, 2),
                     "human_kbps": round(human, 1), "ratio": round(ratio, 4), "frames_sent": len(r.frames),
                     "correct": r.correct})
        print(f"  {r.qa.clip:6s} {r.qa.question[:52]:52s} {r.kbps:7.1f} vs {human:6.0f} kbps  1/{1 / ratio:5.1f}")
    overall = (tot_m / tot_s) / (tot_h / tot_s)
    print(f"  overall: {tot_m / tot_s:.1f} kbps vs {tot_h / tot_s:.0f} kbps = 1/{1 / overall:.0f} "
          f"(goal ≤ 1/10: {'met' if overall <= 0.1 else 'NOT met'})")
    same = rep.agreement(op)
    print(f"answered the same as from the uncompressed frames at {op.name}: {same:.0%} "
          f"(goal ≥ 95%: {'met' if same >= 0.95 else 'NOT met'})")
    if args.hevc:
        hv = next(r for r in rep.rungs if "h265" in r.name)
        print(f"H.265 at the operating point: {hv.kbps:.1f} kbps vs H.264 {op.kbps:.1f} kbps; same answers "
              f"{rep.agreement(hv):.0%}")
    sat = rep.saturation()
    if sat:
        print(f"cheapest rung as accurate as the best: {sat.name} at {sat.kbps:.1f} kbps (a bitrate cap worth setting)")

    # -- latency -------------------------------------------------------------------------------
    print("\nlatency per answer:")
    print(_latency(op.results, f"embedded, in process ({op.name})"))
    print(_latency(rep.baseline.results, "embedded, uncompressed frames"))
    uplink = statistics.median(r.bytes * 8 / 1e6 for r in op.results)
    raw = statistics.median(r.stream_s * h["human_kbps"] / 1000 for r, h in zip(op.results, rows))
    print(f"{'on a 1 Mbit/s uplink':34s} the window's machine stream {uplink:.2f} s, a human-quality stream "
          f"{raw:.1f} s (medians)")
    out = {"ratio_overall": overall, "same_as_uncompressed": same, "rows": rows,
           "rungs": [{"name": r.name, "kbps": r.kbps, "accuracy": r.accuracy, "same": rep.agreement(r)}
                     for r in rep.rungs],
           "baseline_accuracy": rep.baseline.accuracy, "warnings": rep.warnings}
    if args.server:
        from models.llm.openai_compat import OpenAICompatLLM

        proc, url = _server(str(model_file()))
        try:
            srv = run_selftest(SelfTestRequest(OpenAICompatLLM(url, "qwen"), clips, ladder=[OPERATING],
                                               baseline=False, max_tokens=60, human_reference=False))
            r = srv.rungs[0]
            print(_latency(r.results, "llama.cpp server on localhost"))
            print(f"{'':34s} accuracy {r.accuracy:.0%} (in process: {op.accuracy:.0%})")
            out["server"] = {"accuracy": r.accuracy, "transfer_s": statistics.median(x.transfer_s for x in r.results),
                             "inference_s": statistics.median(x.inference_s for x in r.results)}
        finally:
            proc.terminate()
            proc.wait(10)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

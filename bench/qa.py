"""The QA benchmark: questions with known answers, asked through ``main.py chat``'s own path.

    .venv/bin/python bench/qa.py [--limit N] [--category C] [--model NAME] [--json OUT.json]

Each question of bench/qa_set.py (real clips from core.media.samples and clips generated with
known truth) is asked exactly as ``main.py chat CLIP --ask Q --at T --window W`` asks it: through
``core.cli.command("chat")``, its argument parsing, the perception pass over the window, the
answer job and the printed report. Two things differ from a fresh process, both to save time,
neither changing an answer: the chat model is loaded once and handed to every question (the
command would load it each time, for seconds), and the printed report is also kept as the
``ChatAnswer`` it was printed from (the answer is its text; for a file the command refuses,
the one error line it prints). The perception models stay loaded per thread as in the app
(models.loaded).

Prints accuracy overall and per category, the median answer time (the whole command: perception,
encoding, the model), and every wrong answer with what was expected. Goal (issue 17): ≥ 90 %
overall, ≥ 80 % in every category. ``--model``: the chat model's catalogue name (the embedded
qwen2.5-0.5b-chat by default).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.qa_set import CATEGORIES, QUESTIONS, Question, clip_path  # noqa: E402

DEFAULT_MODEL = "qwen2.5-0.5b-chat"


def select(questions=QUESTIONS, category: str | None = None, limit: int | None = None) -> list[Question]:
    """The questions to ask: one category's (or all), the first ``limit`` spread over the categories."""
    qs = [q for q in questions if category in (None, q.category)]
    if limit is not None and limit < len(qs):
        by_cat: dict[str, list[Question]] = {}
        for q in qs:
            by_cat.setdefault(q.category, []).append(q)
        picked: list[Question] = []
        while len(picked) < limit:  # round robin: --limit 10 asks one of each category
            for cat in list(by_cat):
                if by_cat[cat] and len(picked) < limit:
                    picked.append(by_cat[cat].pop(0))
        qs = [q for q in qs if q in picked]
    return qs


class ChatPath:
    """``main.py chat`` as a function: (answer text, exit status, seconds, the printed output)."""

    def __init__(self, model: str = DEFAULT_MODEL) -> None:
        import core.chat.cli as chat_cli
        from core.cli import command

        self._cli = chat_cli
        self._run = command("chat")
        self.model = model
        self._backend = None
        self._last = None

    def backend(self, args):  # replaces core.chat.cli._backend: one loaded model for every question
        if args.server:
            return self._orig_backend(args)
        if self._backend is None:
            from models.catalogue import load_model
            self._backend = load_model(self.model)
        return self._backend

    def report(self, ans) -> None:  # wraps core.chat.cli._report: prints as ever, keeps the answer
        self._last = ans
        self._orig_report(ans)

    def ask(self, path: str, question: str, at: float, window: float) -> tuple[str, int, float, str]:
        argv = [path, "--ask", question, "--at", f"{at:g}", "--window", f"{window:g}"]
        out, err = io.StringIO(), io.StringIO()
        self._last = None
        self._orig_backend, self._orig_report = self._cli._backend, self._cli._report
        self._cli._backend, self._cli._report = self.backend, self.report
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = self._run(argv)
        finally:
            self._cli._backend, self._cli._report = self._orig_backend, self._orig_report
        took = time.perf_counter() - t0
        if self._last is not None:
            text = self._last.text or self._last.error or ""
        else:  # refused before asking (no frames, a bad file): its one error line is the answer
            lines = [ln.strip() for ln in err.getvalue().splitlines() if ln.strip()]
            text = ([ln for ln in lines if ln.startswith("kestrel:")] or lines or [""])[-1]
        return text, rc, took, out.getvalue() + err.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, help="ask only N questions (spread over the categories)")
    ap.add_argument("--category", choices=CATEGORIES, help="ask only this category's questions")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"the chat model's catalogue name ({DEFAULT_MODEL})")
    ap.add_argument("--json", help="write every answer and the totals here")
    ap.add_argument("--verbose", action="store_true", help="print each answer as it comes")
    ap.add_argument("--rescore", metavar="JSON", help="ask nothing: check the answers of an earlier --json run "
                                                      "again with today's checkers")
    args = ap.parse_args(argv)
    if args.rescore:
        rows = rescore(json.loads(Path(args.rescore).read_text())["rows"])
        print(format_summary(summarise(rows), rows))
        return 0

    qs = select(category=args.category, limit=args.limit)
    print(f"QA bench: {len(qs)} questions, model {args.model}, through main.py chat's path", flush=True)
    t_build = time.perf_counter()
    paths = {name: str(clip_path(name)) for name in dict.fromkeys(q.clip for q in qs)}
    print(f"clips ready in {time.perf_counter() - t_build:.1f} s ({len(paths)} clips)", flush=True)
    chat = ChatPath(args.model)
    rows = []
    for i, q in enumerate(qs, 1):
        text, rc, took, printed = chat.ask(paths[q.clip], q.question, q.at, q.window)
        ok = bool(q.check(text))
        rows.append({"clip": q.clip, "question": q.question, "at": q.at, "category": q.category,
                     "expected": q.expected, "answer": text, "right": ok, "rc": rc, "seconds": round(took, 2)})
        mark = "ok " if ok else "BAD"
        print(f"[{i:2d}/{len(qs)}] {mark} {took:5.1f} s  {q.category:9s} {q.clip}: {q.question}"
              + (f"\n        → {text}" if args.verbose or not ok else ""), flush=True)
    summary = summarise(rows)
    print(format_summary(summary, rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "summary": summary, "rows": rows}, indent=1))
    return 0


def rescore(rows: list[dict], questions=QUESTIONS) -> list[dict]:
    """An earlier run's answers checked by today's checkers (questions no longer in the set are dropped)."""
    by_key = {(q.clip, q.question, q.at): q for q in questions}
    out = []
    for r in rows:
        q = by_key.get((r["clip"], r["question"], r["at"]))
        if q is not None:
            out.append({**r, "category": q.category, "expected": q.expected, "right": bool(q.check(r["answer"]))})
    return out


def summarise(rows: list[dict]) -> dict:
    cats = {}
    for c in CATEGORIES:
        rs = [r for r in rows if r["category"] == c]
        if rs:
            cats[c] = {"right": sum(r["right"] for r in rs), "total": len(rs),
                       "accuracy": sum(r["right"] for r in rs) / len(rs)}
    n = len(rows)
    return {"right": sum(r["right"] for r in rows), "total": n,
            "accuracy": sum(r["right"] for r in rows) / n if n else 0.0,
            "median_s": statistics.median(r["seconds"] for r in rows) if rows else 0.0,
            "categories": cats}


def format_summary(s: dict, rows: list[dict]) -> str:
    out = ["", f"overall: {s['right']}/{s['total']} = {100 * s['accuracy']:.0f} %  (goal ≥ 90 %)",
           f"median answer time: {s['median_s']:.1f} s (the whole chat command, model loaded once)", "per category (goal ≥ 80 % each):"]
    for c, v in s["categories"].items():
        flag = "" if v["accuracy"] >= 0.8 else "  < 80 %"
        out.append(f"  {c:9s} {v['right']:2d}/{v['total']:<2d} {100 * v['accuracy']:4.0f} %{flag}")
    wrong = [r for r in rows if not r["right"]]
    if wrong:
        out.append(f"wrong answers ({len(wrong)}):")
        for r in wrong:
            out.append(f"  [{r['category']}] {r['clip']} @ {r['at']:g} s: {r['question']}\n"
                       f"      expected: {r['expected']}\n      got:      {r['answer']}")
    return "\n".join(out)


if __name__ == "__main__":
    raise SystemExit(main())

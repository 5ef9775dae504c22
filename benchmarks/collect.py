r"""Collects the benchmark scripts' JSON lines into results/benchmarks.md.

  python benchmarks/collect.py --run                 # every benchmark, quick arguments
  python benchmarks/collect.py --run --full          # the scripts' own (full) sizes
  python benchmarks/collect.py --run --only sorting,rerank --save /tmp/bench
  python benchmarks/collect.py --from /tmp/bench --from results/benchmarks   # saved outputs

Each script in benchmarks/ prints a table and, last, one JSON line (prefixed
``BENCHMARK_JSON `` or ``JSON: ``). ``--run`` runs each with small arguments
(or its defaults under ``--full``), each under a time limit, and keeps its last
JSON line; ``--save DIR`` (a temporary folder by default) keeps every script's
whole output as ``DIR/<name>.out``, headed by the command and the machine, so
``--from DIR`` can rebuild the report later or on another machine's outputs.
A benchmark that is skipped, fails or runs out of time is listed as not run,
with the command that runs it. Every row carries the command that produced it
and the machine it ran on (hostname, CPU model, cores, JAX device kind, date).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PREFIXES = ("BENCHMARK_JSON ", "JSON: ")
HEADER_COMMAND = "# command: "
HEADER_MACHINE = "# machine: "
HEADER_STATUS = "# status: "


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """One script: quick arguments for ``--run``, full ones for ``--full``."""

  name: str
  script: str
  quick: tuple[str, ...]
  full: tuple[str, ...] = ()
  what: str = ""


BENCHMARKS = (
    Benchmark("inmemory_batcher", "benchmarks/inmemory_batcher.py",
              ("--rows", "20000", "--batch", "1024", "--devices", "2", "--grain_rows", "5000"),
              what="rows/s of ArrayBatcher (numpy, on a mesh) vs grain per-record"),
    Benchmark("pipeline", "benchmarks/pipeline.py",
              ("--rows", "20000", "--batch", "1024", "--devices", "2"),
              what="rows/s of the streaming pipeline vs in-memory, one epoch"),
    Benchmark("pipeline_scale", "benchmarks/pipeline.py",
              ("--simulator_rows", "200000", "--batch", "4096", "--devices", "2"),
              ("--simulator_rows", "10000000"),
              what="simulator logs as array_record: pipeline vs training rows/s, peak RSS"),
    Benchmark("sorting", "benchmarks/sorting.py",
              ("--sizes", "16,64", "--batch", "32", "--repeats", "2", "--cell_timeout", "30"),
              what="soft_rank compile time, forward / forward+backward time and memory per method"),
    Benchmark("relaxed_compile", "benchmarks/relaxed_compile.py",
              ("--n", "64", "--batch", "8", "--timeout", "60"),
              what="SoftSort gradient compile time per formulation (dots or reductions, scan or unrolled)"),
    Benchmark("train_step", "benchmarks/train_step.py",
              ("--batch", "1024", "--devices", "1", "--steps", "3"),
              what="train-step time, LogLoss vs GroupCE, and GroupCE's parts"),
    Benchmark("trainer_overhead", "benchmarks/trainer_overhead.py",
              ("--steps", "60", "--shipped-steps", "43"),
              what="train_and_evaluate examples/s against the bare jitted step"),
    Benchmark("rerank", "benchmarks/rerank.py",
              ("--n", "100", "--k", "10", "--batch", "32", "--gap_lists", "20",
               "--random_lists", "30", "--numpy_lists", "8", "--repeats", "2"),
              what="reranker latency, JAX batched vs numpy per list; greedy gap to the MILP"),
    Benchmark("kuairand_lists", "benchmarks/kuairand_lists.py",
              ("--users", "200", "--days", "10", "--rows_per_day", "100"),
              what="KuaiRand lists per user and day from KuaiRand-1K-sized log columns"),
)


def command_of(bench: Benchmark, full: bool) -> list[str]:
  return ["python", bench.script, *(bench.full if full else bench.quick)]


def machine() -> dict[str, str]:
  """Hostname, CPU model, core count, JAX device kind and platform, date (UTC)."""
  cpu = platform.processor() or platform.machine()
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  try:
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; d = jax.devices(); "
         "print(f'{d[0].device_kind} ({d[0].platform}) x{len(d)}')"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    device = probe.stdout.strip().splitlines()[-1] if probe.returncode == 0 else "unknown"
  except (OSError, subprocess.TimeoutExpired, IndexError):
    device = "unknown"
  return {"hostname": socket.gethostname(), "cpu": cpu, "cores": str(os.cpu_count()),
          "device": device,
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def last_json(text: str) -> dict | None:
  """The last line of ``text`` that is a prefixed (or bare) JSON object."""
  for line in reversed(text.splitlines()):
    line = line.strip()
    for prefix in PREFIXES:
      if line.startswith(prefix):
        line = line[len(prefix):]
        break
    if line.startswith("{"):
      try:
        return json.loads(line)
      except json.JSONDecodeError:
        continue
  return None


def run_one(bench: Benchmark, *, full: bool, timeout: float, host: dict, save_dir: pathlib.Path
            ) -> dict:
  """Runs one script, saves its output with a header, returns its record."""
  command = command_of(bench, full)
  start = time.perf_counter()
  try:
    result = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    output, status = result.stdout + result.stderr[-4000:], f"exit {result.returncode}"
    if result.returncode != 0:
      status = f"failed (exit {result.returncode})"
  except subprocess.TimeoutExpired as e:
    output = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    status = f"not run: over the {timeout:.0f} s limit here"
  seconds = time.perf_counter() - start
  data = last_json(output) if not status.startswith("not run") else None
  if data is None and not status.startswith(("not run", "failed")):
    status = "failed (no JSON line)"
  elif data is not None:
    status = "ok"
  record = {"name": bench.name, "command": shlex.join(command), "machine": host,
            "status": status, "seconds": round(seconds, 1), "json": data}
  header = (f"{HEADER_COMMAND}{record['command']}\n{HEADER_MACHINE}{json.dumps(host)}\n"
            f"{HEADER_STATUS}{status} in {seconds:.1f} s\n")
  (save_dir / f"{bench.name}.out").write_text(header + output)
  return record


def read_saved(directory: pathlib.Path) -> list[dict]:
  """Records from saved outputs in ``directory``.

  ``<name>.out`` files written by ``--run --save`` carry a header (command,
  machine, status); a ``.txt`` file whose first line is ``$ COMMAND  # NOTE``
  (a shell transcript, e.g. a long run done by hand) gives the command and a
  note about the machine; otherwise the command is marked unknown.
  """
  records = []
  known = {b.name: b for b in BENCHMARKS}
  for path in sorted([*directory.glob("*.out"), *directory.glob("*.txt")]):
    text = path.read_text()
    command, host, status = None, {}, None
    first_lines = text.splitlines()[:3]
    for line in first_lines:
      if line.startswith(HEADER_COMMAND):
        command = line[len(HEADER_COMMAND):]
      elif line.startswith(HEADER_MACHINE):
        machine = line[len(HEADER_MACHINE):]
        try:
          host = json.loads(machine)
        except json.JSONDecodeError:  # a hand-written description of the machine
          host = {"note": machine.strip()}
      elif line.startswith(HEADER_STATUS):
        status = line[len(HEADER_STATUS):]
    if command is None and first_lines and first_lines[0].startswith("$ "):
      command, _, note = first_lines[0][2:].partition("#")
      command = command.strip()
      host = {"hostname": "(from the transcript)", "note": note.strip()}
    data = last_json(text)
    if data is None and command is None:
      continue  # not a benchmark output
    if command is None:
      bench = known.get(path.stem)
      command = (f"unknown (saved output {path.name}; e.g. "
                 f"{shlex.join(command_of(bench, False))})" if bench else f"unknown ({path.name})")
    if data is not None and not (status or "").startswith("ok"):
      status = "ok"
    records.append({"name": path.stem, "command": command, "machine": host,
                    "status": status or "failed (no JSON line)", "json": data,
                    "source": str(path)})
  return records


def _number(value) -> str:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value)
  if isinstance(value, int) or abs(value) >= 1000:
    return f"{value:,.0f}"
  return f"{value:.4g}"


def _leaves(value, path=""):
  """(dotted path, value) of every scalar in nested dicts and lists, in order."""
  if isinstance(value, dict):
    for key, item in value.items():
      yield from _leaves(item, f"{path}.{key}" if path else str(key))
  elif isinstance(value, list):
    for i, item in enumerate(value):
      yield from _leaves(item, f"{path}[{i}]")
  elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
    yield path, value


def _headline(data: dict, limit: int = 12) -> str:
  """A one-cell summary: the record's first numbers, with their dotted keys."""
  parts = [f"{path}={_number(value)}" for path, value in _leaves(data)
           if path != "benchmark"][:limit]
  text = "; ".join(parts).replace("|", "/")
  return text if len(text) <= 600 else text[:597] + "..."


def render(records: list[dict], *, mode: str) -> str:
  """The markdown report."""
  lines = ["# Benchmarks", "",
           f"Collected by `python benchmarks/collect.py {mode}` (see its docstring). Each row "
           "names the command that produced it and the machine it ran on; figures are from "
           "that machine only. Rows marked *not run* give the command to run them.", ""]
  machines = []
  for record in records:
    if record["machine"] and record["machine"] not in machines:
      machines.append(record["machine"])
  if machines:
    lines += ["## Machines", "", "| id | hostname | CPU | cores | JAX device | date | note |",
              "|---|---|---|---|---|---|---|"]
    for i, host in enumerate(machines):
      lines.append(f"| m{i} | {host.get('hostname', '?')} | {host.get('cpu', '?')} | "
                   f"{host.get('cores', '?')} | {host.get('device', '?')} | "
                   f"{host.get('date', '?')} | {host.get('note', '')} |")
    lines.append("")
  lines += ["## Results", "", "| benchmark | status | machine | command | headline figures |",
            "|---|---|---|---|---|"]
  for record in records:
    machine_id = (f"m{machines.index(record['machine'])}" if record["machine"] in machines
                  else "?")
    headline = _headline(record["json"]) if record["json"] else "—"
    seconds = f" ({record['seconds']} s)" if record.get("seconds") is not None else ""
    lines.append(f"| {record['name']} | {record['status']}{seconds} | {machine_id} | "
                 f"`{record['command']}` | {headline} |")
  lines.append("")
  if mode != "--run --full":
    lines += ["## Full-size runs", "",
              "The quick rows above are not the scripts' own sizes, which take long on a shared "
              "CPU. Run these on the target machine, then collect with `--run --full` or "
              "`--from DIR`:", ""]
    done = [r["command"] for r in records if r["json"]]
    for b in BENCHMARKS:
      full = shlex.join(command_of(b, True))
      # Full size: the script's defaults exactly, or its full arguments plus extra ones.
      ran = any(c == full or (b.full and c.startswith(full + " ")) for c in done)
      lines.append(f"- {b.name} ({b.what}): `{full}`" + (" — recorded above" if ran else ""))
    lines.append("")
  for record in records:
    if record["json"]:
      lines += [f"### {record['name']}", "", f"`{record['command']}` on "
                f"{record['machine'].get('hostname', '?')} ({record['machine'].get('device', '?')})",
                "", "```"]
      lines += [f"{key}: {json.dumps(value)}" for key, value in record["json"].items()]
      lines += ["```", ""]
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--run", action="store_true", help="run the benchmarks now")
  source.add_argument("--from", dest="from_dir", action="append",
                      help="read saved outputs (DIR/*.out, DIR/*.txt transcripts); repeatable")
  parser.add_argument("--full", action="store_true", help="the scripts' own sizes, not quick")
  parser.add_argument("--only", default="", help="comma-separated benchmark names")
  parser.add_argument("--skip", default="", help="comma-separated names to list as not run")
  parser.add_argument("--timeout", type=float, default=300.0, help="seconds per benchmark")
  parser.add_argument("--save", default="", help="--run: keep outputs here (default: a temp dir)")
  parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks.md"))
  args = parser.parse_args(argv)
  names = [b.name for b in BENCHMARKS]
  only = [n for n in args.only.split(",") if n] or names
  skip = [n for n in args.skip.split(",") if n]
  unknown = sorted(set(only + skip) - set(names))
  if unknown:
    parser.error(f"unknown benchmark(s) {unknown}; known: {names}")

  if args.run:
    save_dir = pathlib.Path(args.save or tempfile.mkdtemp(prefix="hgrank_benchmarks_"))
    save_dir.mkdir(parents=True, exist_ok=True)
    host = machine()
    records = []
    for bench in BENCHMARKS:
      if bench.name not in only:
        continue
      if bench.name in skip:
        records.append({"name": bench.name, "command": shlex.join(command_of(bench, args.full)),
                        "machine": host, "status": "not run (skipped: takes long here)",
                        "json": None})
        continue
      print(f"running {bench.name}: {shlex.join(command_of(bench, args.full))}", flush=True)
      records.append(run_one(bench, full=args.full, timeout=args.timeout, host=host,
                             save_dir=save_dir))
      print(f"  {records[-1]['status']} in {records[-1]['seconds']} s", flush=True)
    print(f"outputs saved in {save_dir}")
    mode = "--run" + (" --full" if args.full else "")
  else:
    records = [r for directory in args.from_dir for r in read_saved(pathlib.Path(directory))
               if r["name"] in only or (not args.only and r["json"])]
    # Known benchmarks in their order, then extra saved runs (e.g. full-size transcripts).
    records.sort(key=lambda r: (names.index(r["name"]) if r["name"] in names else len(names),
                                r["name"]))
    mode = " ".join(f"--from {d}" for d in args.from_dir)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(render(records, mode=mode))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()

"""What fits on which GPU: every model of configs/competition.yaml and of
config.yaml (the demo), one training step (forward + backward + AdamW) and
one forward pass as prediction runs it, on windows of one size at batch 1,
2 and 4.

Per model: parameters; seconds per window of a training step and of a
prediction forward pass; peak memory of the step. On CUDA: mixed precision as training runs it (float16 autocast
with a GradScaler, what a V100 supports; ``--precision float32`` measures
without it, for the speed-up it buys), peak from
torch.cuda.max_memory_allocated, and whether batch 2 fits a 16 GB and a
32 GB card (peak plus 1 GiB for the CUDA context). On the CPU (no GPU):
float32, peak resident memory of the process above the built model, which
says how the models compare, not what a GPU needs.

Each model runs in a fresh process (peak memory is per process); encoders
are built without their pretrained weights (same size and speed; nothing
is downloaded).

``--costs-out FILE`` also writes the figures as a cost table for
``handbone estimate --costs FILE`` (docs/gpus.md, "How long a run takes").

Usage:
  python benchmarks/models.py [--window 1024] [--batches 1 2 4] [--repeats 5]
      [--device cuda|cpu] [--configs configs/competition.yaml config.yaml] [--out models.json]
      [--costs-out costs.yaml]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
CUDA_CONTEXT = 1 * GIB


def configured_models(config_files: list[str]) -> dict:
    """{name: (spec, source file)} of every non-null model of the files."""
    models = {}
    for name in config_files:
        for model, spec in yaml.safe_load((REPO / name).read_text())["models"].items():
            if spec is not None:
                models[model] = ({key: value for key, value in spec.items() if key != "train"}, name)
    return models


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def measure(spec: dict, window: int, batches: list[int], repeats: int, device_name: str, precision: str) -> dict:
    """One model, in this process: parameters, and per batch size the
    seconds per window of a training step and its peak memory."""
    import torch

    sys.path.insert(0, str(REPO / "workflow"))
    from handbone.devices import autocast_dtype
    from handbone.model import build_model, to_device
    from handbone.train import make_loss

    device = torch.device(device_name)
    model = to_device(build_model({**spec, "encoder_weights": None}, window), device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cuda = device.type == "cuda"
    mixed = cuda and precision == "auto"  # float32: the speed-up that mixed precision buys
    scaler = torch.amp.GradScaler("cuda", enabled=mixed)
    loss_fn = make_loss({"dice": 1.0, "bce": 1.0})
    baseline = resident_bytes()
    result = {"parameters": sum(parameter.numel() for parameter in model.parameters()), "batches": {}}

    def step(images, masks):
        with torch.autocast(device.type, dtype=torch.float16, enabled=mixed):
            loss = loss_fn(model(images), masks)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    predict_dtype = autocast_dtype(device, precision)  # as prediction runs the forward passes

    @torch.no_grad()
    def forward(images):
        with torch.autocast(device.type, dtype=predict_dtype, enabled=predict_dtype is not None):
            torch.sigmoid(model(images).float())

    def timed(function, *tensors) -> float:
        function(*tensors)  # warm-up: cuDNN plans, allocator
        if cuda:
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(repeats):
            function(*tensors)
        if cuda:
            torch.cuda.synchronize(device)
        return (time.perf_counter() - started) / repeats

    for batch in batches:
        images = torch.randn(batch, 3, window, window, device=device)
        masks = (torch.rand(batch, 29, window, window, device=device) > 0.5).float()
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            model.train()
            seconds = timed(step, images, masks)
            peak = (
                torch.cuda.max_memory_allocated(device)
                if cuda
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
            )
            model.eval()
            infer_seconds = timed(forward, images)
            result["batches"][batch] = {
                "seconds_per_window": seconds / batch,
                "infer_seconds_per_window": infer_seconds / batch,
                "peak_gib": peak / GIB,
            }
        except torch.OutOfMemoryError:
            result["batches"][batch] = {"seconds_per_window": None, "peak_gib": None, "error": "out of memory"}
            break
        except ValueError as error:  # e.g. a batch norm that cannot train on one image
            result["batches"][batch] = {"seconds_per_window": None, "peak_gib": None, "error": str(error)[:200]}
        finally:
            del images, masks
            if cuda:
                torch.cuda.empty_cache()
    return result


def fits(peak_gib, card_gib: int) -> str:
    if peak_gib is None:
        return "no"
    return "yes" if peak_gib * GIB + CUDA_CONTEXT <= card_gib * 10**9 else "no"


def table(rows: list[dict], batches: list[int], device: str, window: int, precision: str = "auto") -> str:
    memory = (
        f"peak GPU GiB ({'AMP' if precision == 'auto' else 'fp32'})"
        if device == "cuda"
        else "peak RSS GiB above the model (fp32)"
    )
    header = ["model", "config", "arch / encoder", "params (M)"]
    header += [f"train ms/window b{batch}" for batch in batches]
    header += [f"predict ms/window b{batch}" for batch in batches]
    header += [f"{memory} b{batch}" for batch in batches]
    header += ["b2 fits 16 GB", "b2 fits 32 GB"] if device == "cuda" else []
    lines = [
        f"Training step (forward + backward + AdamW) and prediction forward pass, {window} x {window} windows,"
        f" device {device}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        measured = row["batches"]
        cells = [
            row["model"],
            row["config"],
            f"{row['spec']['arch']} / {row['spec'].get('encoder', '-')}",
            f"{row['parameters'] / 1e6:.1f}",
        ]

        def failed(batch):
            error = measured.get(str(batch), {}).get("error", "")  # noqa: B023 (used in this iteration)
            return "OOM" if "memory" in error else "cannot train" if error else "-"

        cells += [
            f"{measured[str(b)]['seconds_per_window'] * 1000:.0f}"
            if measured.get(str(b), {}).get("seconds_per_window")
            else failed(b)
            for b in batches
        ]
        cells += [
            f"{measured[str(b)]['infer_seconds_per_window'] * 1000:.0f}"
            if measured.get(str(b), {}).get("infer_seconds_per_window")
            else failed(b)
            for b in batches
        ]
        cells += [
            f"{measured[str(b)]['peak_gib']:.2f}" if measured.get(str(b), {}).get("peak_gib") is not None else failed(b)
            for b in batches
        ]
        if device == "cuda":
            peak = measured.get("2", {}).get("peak_gib")
            cells += [fits(peak, 16), fits(peak, 32)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(rows: list[dict], window: int, device: str, device_name: str, threads: int, precision: str) -> dict:
    """The figures as a cost table of ``handbone estimate`` (one entry per
    architecture, encoder and kwargs; a batch that failed is left out)."""
    import torch

    cuda = device.startswith("cuda")
    entries = []
    for row in rows:
        measured = {int(b): m for b, m in row["batches"].items() if m.get("seconds_per_window")}
        entry = {"arch": row["spec"]["arch"], "encoder": row["spec"].get("encoder")}
        if row["spec"].get("kwargs"):
            entry["kwargs"] = row["spec"]["kwargs"]
        entry["window"] = window
        entry["train_ms_per_window"] = {b: round(m["seconds_per_window"] * 1000, 2) for b, m in measured.items()}
        entry["infer_ms_per_window"] = {b: round(m["infer_seconds_per_window"] * 1000, 2) for b, m in measured.items()}
        if cuda:
            entry["train_peak_gib"] = {b: round(m["peak_gib"], 2) for b, m in measured.items()}
        entry["source"] = f"benchmarks/models.py --device {device} --window {window}, {time.strftime('%Y-%m-%d')}"
        entries.append(entry)
    table = {
        "device": device_name if cuda else f"CPU, {threads} threads",
        "precision": "float16 autocast" if cuda and precision == "auto" else "float32",
    }
    if cuda:
        table["gpu"] = True
        table["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 10**9, 1)
        table["loader_workers"] = 3  # a train job's 4 threads: the main process and 3 loader workers
    table["models"] = entries
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=int, default=1024, help="window side in pixels (the training input size)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--precision",
        choices=["auto", "float32"],
        default="auto",
        help="auto: as the workflow runs (float16 autocast on CUDA, float32 on the CPU); float32: no autocast",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per batch size (after one warm-up)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--configs", nargs="+", default=["configs/competition.yaml", "config.yaml"])
    parser.add_argument("--out", default="results/benchmarks/models.json")
    parser.add_argument("--costs-out", help="also write the figures as a cost table for `handbone estimate --costs`")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this JSON spec in this process
    args = parser.parse_args()
    if args.one:
        print(
            json.dumps(
                measure(json.loads(args.one), args.window, args.batches, args.repeats, args.device, args.precision)
            )
        )
        return
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = args.device
    device_name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    rows, failures = [], []
    for name, (spec, source) in configured_models(args.configs).items():
        command = [
            sys.executable,
            __file__,
            "--one",
            json.dumps(spec),
            "--window",
            str(args.window),
            "--repeats",
            str(args.repeats),
            "--device",
            args.device,
            "--precision",
            args.precision,
            "--batches",
            *map(str, args.batches),
        ]
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            # One model that cannot be built or run (a missing library, a
            # window its encoder refuses) must not cost the others' figures.
            failures.append(name)
            print(f"{name}: FAILED\n{completed.stderr[-2000:]}", file=sys.stderr)
            rows.append(
                {
                    "model": name,
                    "config": source,
                    "spec": spec,
                    "parameters": None,
                    "batches": {},
                    "error": completed.stderr.strip().splitlines()[-1][:300] if completed.stderr.strip() else "failed",
                }
            )
        else:
            rows.append(
                {"model": name, "config": source, "spec": spec, **json.loads(completed.stdout.splitlines()[-1])}
            )
            print(f"{name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        # Written after every model, so a run cut short keeps what it measured.
        report = {"window": args.window, "device": device_name, "repeats": args.repeats, "models": rows}
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    measured = [row for row in rows if row["parameters"] is not None]
    print(
        table(
            json.loads(json.dumps(measured)),
            args.batches,
            "cuda" if device.startswith("cuda") else "cpu",
            args.window,
            args.precision,
        )
    )
    print(f"\n(device: {device_name}; JSON: {args.out})")
    if args.costs_out:
        costs = cost_table(measured, args.window, device, device_name, torch.get_num_threads(), args.precision)
        Path(args.costs_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.costs_out).write_text(yaml.safe_dump(costs, sort_keys=False))
        print(f"(cost table for handbone estimate: {args.costs_out})")
    if failures:
        sys.exit(f"not measured (see above): {', '.join(failures)}")


if __name__ == "__main__":
    main()

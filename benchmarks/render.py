"""3D Shapes renderer throughput: images per second, cold (first geometry build) and warm, per batch size.

Cold: building the 480 coverage maps (ray casting), and loading them back from the on-disk cache.
Warm: ``Shapes3D().images(indices)`` for random indices, per batch size, median over repeats; and
``dataset[i]`` one item at a time (the float image learn2learn's ``LoadData`` asks for). Runs on the CPU
and, when one is present, on the GPU. Prints a table and writes JSON (default
``benchmarks/results/render.json``).

Example:
    From a clone of the repository::

        metasparse bench render                        # or: python benchmarks/render.py
        metasparse bench render --batch-sizes 64 1024 --repeats 3 --out /tmp/render.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from metasparse.data import NUM_IMAGES, Shapes3D
from metasparse.data.render import Shapes3DRenderer, build_coverage_maps

__all__ = ["RESULTS_FILE", "main", "measure_device"]

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "render.json"


def _seconds(function, device: torch.device) -> float:
    """Wall-clock seconds of ``function()``, waiting for the GPU when there is one."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure_device(device: torch.device, batch_sizes: list[int], repeats: int, items: int) -> dict:
    """Cold and warm throughput on one device.

    Args:
        device: Where to render.
        batch_sizes: Batch sizes of the warm measurement.
        repeats: Batches per batch size; the median is reported.
        items: Single items fetched with ``dataset[i]``.

    Returns:
        ``{"cold": {...}, "warm": {batch_size: {...}}, "items_per_s": ...}``.
    """
    generator = torch.Generator().manual_seed(0)
    build_s = _seconds(lambda: build_coverage_maps(device), device)
    with tempfile.TemporaryDirectory() as cache_dir:
        Shapes3DRenderer(device, cache=cache_dir).images(torch.zeros(1, dtype=torch.long))  # writes the file
        cached = Shapes3DRenderer(device, cache=cache_dir)
        cache_load_s = _seconds(lambda: cached.coverage_maps, device)

    dataset = Shapes3D(device=device)
    first_batch = torch.randint(NUM_IMAGES, (max(batch_sizes),), generator=generator)
    first_s = _seconds(lambda: dataset.images(first_batch), device)  # includes the build
    cold = {"build_s": build_s, "cache_load_s": cache_load_s, "first_batch": len(first_batch),
            "first_batch_s": first_s, "first_batch_images_per_s": len(first_batch) / first_s}

    warm = {}
    for batch_size in batch_sizes:
        batches = [torch.randint(NUM_IMAGES, (batch_size,), generator=generator) for _ in range(repeats)]
        dataset.images(batches[0])  # warm-up
        times = [_seconds(lambda batch=batch: dataset.images(batch), device) for batch in batches]
        median = statistics.median(times)
        warm[batch_size] = {"median_s": median, "images_per_s": batch_size / median,
                            "best_images_per_s": batch_size / min(times)}

    indices = torch.randint(NUM_IMAGES, (items,), generator=generator).tolist()
    items_s = _seconds(lambda: [dataset[i] for i in indices], device)
    return {"cold": cold, "warm": warm, "items_per_s": items / items_s}


def _table(results: dict) -> str:
    rows = []
    for device, result in results["devices"].items():
        cold = result["cold"]
        rows += [(device, "cold: build the 480 coverage maps", f"{cold['build_s']:.2f} s"),
                 (device, "cold: load them from the disk cache", f"{cold['cache_load_s'] * 1e3:.0f} ms"),
                 (device, f"cold: first batch of {cold['first_batch']}, build included",
                  f"{cold['first_batch_images_per_s']:,.0f} images/s")]
        rows += [(device, f"warm: `images()`, batch {batch_size}", f"{warm['images_per_s']:,.0f} images/s")
                 for batch_size, warm in result["warm"].items()]
        rows.append((device, "warm: `dataset[i]`, one float item at a time",
                     f"{result['items_per_s']:,.0f} items/s"))
    return "\n".join(["| device | measurement | result |", "|---|---|---|"]
                     + [f"| {' | '.join(row)} |" for row in rows])


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write the JSON.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success.
    """
    parser = argparse.ArgumentParser(prog="metasparse bench render", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024], metavar="N")
    parser.add_argument("--repeats", type=int, default=7, help="batches per batch size (median reported)")
    parser.add_argument("--items", type=int, default=2000, help="single items fetched with dataset[i]")
    parser.add_argument("--device", action="append", default=None,
                        help="device to measure, repeatable (default: cpu, and cuda when available)")
    parser.add_argument("--out", type=Path, default=RESULTS_FILE, help="JSON file to write")
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.items < 1:
        parser.error("--batch-sizes, --repeats and --items must be positive")
    devices = args.device or ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]

    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "command": " ".join(["metasparse bench render", *(sys.argv[1:] if argv is None else argv)]),
        "devices": {device: measure_device(torch.device(device), args.batch_sizes, args.repeats, args.items)
                    for device in devices},
    }
    print(_table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

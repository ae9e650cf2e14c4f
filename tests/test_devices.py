import os
import subprocess
import sys

TAKE_SLOT = (
    "import sys, time; from handbone.devices import acquire_gpu_slot; "
    "print(acquire_gpu_slot(wait_seconds=0), flush=True); time.sleep(float(sys.argv[1]))"
)


def _start(lock_dir, hold_seconds, **extra):
    environment = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    environment.update({"HANDBONE_GPUS": "2", "HANDBONE_GPU_LOCK_DIR": str(lock_dir), **extra})
    return subprocess.Popen(
        [sys.executable, "-c", TAKE_SLOT, str(hold_seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def test_concurrent_jobs_get_different_gpus_and_a_third_waits(tmp_path):
    first = _start(tmp_path, 30)
    assert first.stdout.readline().strip() == "0"
    second = _start(tmp_path, 30)
    assert second.stdout.readline().strip() == "1"
    third = _start(tmp_path, 0)
    _, error = third.communicate(timeout=60)
    assert third.returncode != 0 and "no free GPU slot" in error
    first.kill()
    first.wait()
    # The operating system drops a killed job's lock, so its GPU is free again.
    again = _start(tmp_path, 0)
    assert again.communicate(timeout=60)[0].strip() == "0"
    second.kill()
    second.wait()


def test_no_gpu_means_cpu_and_scheduler_choice_is_kept(tmp_path):
    cpu = _start(tmp_path, 0, HANDBONE_GPUS="0")
    assert cpu.communicate(timeout=60)[0].strip() == "None"
    slurm = _start(tmp_path, 0, CUDA_VISIBLE_DEVICES="3")
    assert slurm.communicate(timeout=60)[0].strip() == "3"


def test_three_jobs_on_three_gpus_run_at_once(tmp_path):
    started = [_start(tmp_path, 20, HANDBONE_GPUS="3") for _ in range(3)]
    try:
        # wait_seconds=0: a job that had to wait for a slot would fail instead.
        devices = [process.stdout.readline().strip() for process in started]
        assert sorted(devices) == ["0", "1", "2"]
        assert all(process.poll() is None for process in started), "all three still hold their GPU together"
    finally:
        for process in started:
            process.kill()
            process.wait()

#!/usr/bin/env bash
# Issue 13's CUDA points in one short device run (< 10 minutes): the flashrnn kernels and the runtime on CUDA against
# the CPU reference (tests), the predefined speed benchmark with the flashrnn formulation ((a:flashrnn)/(b) against
# the <= 1.15 target; settles FLASHRNN_AUTO_MAX_HIDDEN in compress/predefined/recurrent.py), and the inference speed
# table on CUDA.
#
#   bash benchmarks/gpu_check.sh prepare   # here, once: wheels the GPU image lacks, into .whl/ (git-ignored)
#   bash benchmarks/gpu_check.sh run       # on the GPU machine, from the repository root, with .whl carried
#
# Results go to $OUT (or ./gpu-results) as plain text; copy them to benchmarks/results/ with the date and machine.
set -uo pipefail
mode=${1:-run}
wheels=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 flashrnn==1.0.8)

if [[ $mode == prepare ]]; then
    exclude="$(git rev-parse --git-common-dir)/info/exclude"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "${wheels[@]}"
    exit $?
fi

out=${OUT:-gpu-results}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c "import torch, flashrnn; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/machine.txt"

# 1. correctness on CUDA (flashrnn kernels compile on first use: a minute or more)
timeout 270 python3 -m pytest -q -p no:cacheprovider tests/compress/test_flashrnn.py tests/compress/test_cuda.py \
    -k "not slow" 2>&1 | tee "$out/cuda_tests.txt"
# 2. training speed: predefined LSTM formulations incl. flashrnn against dense cuDNN
timeout 200 python3 benchmarks/predefined_speed.py --device cuda --sizes 200,650,1500 --repeats 15 2>&1 \
    | tee "$out/predefined_speed_cuda.txt"
# 3. inference speed: runtime vs dense on CUDA
timeout 100 python3 benchmarks/inference_speed.py --device cuda --quick --threads 1 2>&1 \
    | tee "$out/inference_speed_cuda.txt"

# Sourced by the device scripts: the carried wheels (.whl/: expecttest, which the GPU image lacks
# and torch.testing._internal imports), the editable install, and a line naming the versions.
# .whl/ is not in git; on a new checkout: pip download --no-deps expecttest "nvidia-cutlass==4.2.*" -d .whl
# (CUTLASS's headers for the cutlass extra), kept out of commits by .git/info/exclude.
# Expects OUT set; appends the versions to "$1".
if ! python3 -c "import expecttest" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import ait_dynamo.partitioners" 2>/dev/null || python3 -m pip install -q --no-deps --no-build-isolation -e .
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" \
  | tee -a "$1"
# Runs `python -m benchmarks ARGS` with ait's INFO log (its decisions) on stderr:
#   python3 -c "$AIT_LOGGED" run --workload ...
AIT_LOGGED='import logging, runpy, sys
logging.basicConfig(level=logging.WARNING, format="%(relativeCreated)d %(name)s %(message)s")
logging.getLogger("ait_dynamo").setLevel(logging.INFO)
sys.argv = ["benchmarks", *sys.argv[1:]]
runpy.run_module("benchmarks", run_name="__main__")'

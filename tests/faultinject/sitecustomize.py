"""Fault injection for a server started by the tests (put this folder on its PYTHONPATH; its
decoder workers inherit it):
with EMOTION_FAULT_ORT_TRIGGER=<path>, every ONNX Runtime session run raises ORT's own
`Fail` while that file exists, as a broken model or a failing provider would. Nothing in
the service knows about it."""
import os

_trigger = os.environ.get("EMOTION_FAULT_ORT_TRIGGER")
if _trigger:
    import onnxruntime
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    _run = onnxruntime.InferenceSession.run

    def run(self, *args, **kwargs):
        if os.path.exists(_trigger):
            raise Fail("injected fault: session run failed")
        return _run(self, *args, **kwargs)

    onnxruntime.InferenceSession.run = run

# Faults of the decoder workers (service/pipeline/decode_worker.py runs PyAV's av.open):
# with EMOTION_FAULT_DECODER_SLOW=<path>, while that file exists each packet demuxed takes
# 20 ms more, and the worker writes its pid to <path>.busy when its demux pass starts (time to
# kill it from outside, mid-decode); with EMOTION_FAULT_DECODER_HANG=<path>, while that file
# exists opening a file never returns (a demuxer stuck in a loop).
_slow = os.environ.get("EMOTION_FAULT_DECODER_SLOW")
_hang = os.environ.get("EMOTION_FAULT_DECODER_HANG")
if _slow or _hang:
    import time

    import av

    _open = av.open

    class _SlowContainer:
        def __init__(self, container):
            self._container = container

        def __getattr__(self, name):
            return getattr(self._container, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._container.close()

        def demux(self, *streams):
            with open(_slow + ".busy", "w") as f:
                f.write(str(os.getpid()))
            for packet in self._container.demux(*streams):
                time.sleep(0.02)
                yield packet

    def _faulty_open(*args, **kwargs):
        while _hang and os.path.exists(_hang):
            time.sleep(0.05)
        container = _open(*args, **kwargs)
        return _SlowContainer(container) if _slow and os.path.exists(_slow) else container

    av.open = _faulty_open

# A file that crashes the decoder (as an FFmpeg bug would on a crafted file): with
# EMOTION_FAULT_DECODER_CRASH=<text>, opening a path whose name holds <text> kills the
# process that opens it with SIGSEGV (tests/test_cluster_batch.py: a decoder worker, not the actor).
_crash = os.environ.get("EMOTION_FAULT_DECODER_CRASH")
if _crash:
    import signal

    import av

    _open_before_crash = av.open

    def _crashing_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and _crash in os.path.basename(os.fspath(file)):
            os.kill(os.getpid(), signal.SIGSEGV)
        return _open_before_crash(file, *args, **kwargs)

    av.open = _crashing_open

"""Fault injection for a server started by the tests (put this folder on its PYTHONPATH):
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

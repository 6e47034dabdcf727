"""mmmos.calibration: INT8 encoder graphs, precision reports the runtime trusts, and target statistics.

``mmmos-calibrate BUNDLE DATA`` (``mmmos.calibration.cli``) runs ``calibrate.calibrate_bundle``: it quantizes
the encoder bodies to INT8 for ONNX Runtime CPU (``int8_ort``; TensorRT's QDQ variant in ``int8_trt``),
scores DATA at every precision of the bundle (``runner``), compares each with fp32 per axis (``reports``)
and writes ``precisions[p].status`` into the manifest and the numbers into report.json (``bundle_io``).
``stats`` computes target statistics from a labelled manifest; ``bench`` times the encoder graphs.
Imports: numpy, onnx, onnxruntime (and the stdlib-only manifest reader of ``mmmos.training.manifests``,
the runtime's bundle sha256 helper); never torch.
"""

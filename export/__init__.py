"""mmmos.export: PyTorch -> ONNX bundles (fp32 + mixed fp16), checks, parity report, TensorRT engines.

Entry points: ``mmmos-export`` (``mmmos.export.cli:main``) and ``mmmos.export.pipeline.export_bundle``.
"""

"""Official public datasets read from their published files: KuaiRand (the bundled
subset in ``bundled/`` and the full logs from a manual directory), MovieLens,
Taobao, the KuaiRand reranking requests, and the TensorFlow-free TFDS builders
that prepare them as array_record. Nothing is downloaded; see docs/datasets.md."""

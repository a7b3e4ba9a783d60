"""The model side of the pipeline: prompt, backbone and precision, the family's layout, attention capture,
scoring, batching, GGUF conversion and adapters. The only package that imports transformers or peft."""

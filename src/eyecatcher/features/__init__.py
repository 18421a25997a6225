"""Frozen-backbone features, computed once per image and view and cached on disk.

With a frozen backbone the only thing training changes is the head; running the backbone again
every epoch recomputes the same numbers. One module per part, imported directly:

* :mod:`.views`: how an image becomes a model input (clean and seeded augmented views), read
  and checked against its sha256;
* :mod:`.cache`: the cache key (backbone, view, runtime) and the store (its catalog dataset is
  :mod:`eyecatcher.datasets.feature_cache_dataset`);
* :mod:`.compute`: the recipe (look up, compute the misses, store) and its engines: ``local``
  here, others (``ray``) registered as ``eyecatcher.feature_engines`` entry points, so this
  package never imports the code that distributes it;
* :mod:`.runtimes`: what runs the backbone (PyTorch, its ONNX graph, bfloat16).
"""

"""A dnas plugin: importing it registers the op, the space and the regularizer of ``custom_space.py``.

With this folder on the module path (or as the current directory)::

    dnas --plugin my_plugin search --space nb201-gelu --epochs 1 channels=4 layers=1 max_images=160 \\
        arch_regularizers=edge-entropy arch_regularizers.edge-entropy.weight=0.5
"""

from custom_space import register

register()

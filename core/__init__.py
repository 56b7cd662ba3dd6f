"""What every layer of the suite shares: its user errors, its run-folder layout, the hooks the
command line and the callbacks rely on, atomic file writes and the common defaults.

Nothing here imports another package of the suite: ``core`` is the bottom layer
(``core`` ← ``networks``, ``losses`` ← ``datamodules`` ← ``evaluation`` ←
``lightning_modules`` ← ``callbacks`` ← ``cli``).
"""

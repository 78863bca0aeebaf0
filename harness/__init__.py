"""The golden-output test harness engine shared by ``run-tests.sh`` and pytest.

Modules: ``devices`` (images, loop devices, claims, cleanup), ``cluster`` (mkfs, mounts),
``runner`` (one test, post-test checks), ``results`` (reports), ``selection`` (sequence, regexes,
shuffle, shards), ``cli`` (run-tests.sh), ``pytest_plugin`` (golden tests as pytest items).
"""

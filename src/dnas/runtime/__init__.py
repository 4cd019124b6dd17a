"""What every run needs around its algorithm: the runner (:mod:`.runner`), run directories and
checkpoints (:mod:`.rundir`), their file names and metric records (:mod:`.files`, :mod:`.metrics`),
atomic writes (:mod:`.atomic`), the environment and random state (:mod:`.environment`), graceful
stops (:mod:`.signals`), progress bars, threads, data parallelism (:mod:`.distributed`), the host
allocator policy (:mod:`.allocator`) and the plugins a run imports (:mod:`.plugins`)."""

"""flaxtrainer.runtime.distributed reaches into two private JAX modules, each behind one guarded
function that degrades quietly. These tests fail loudly instead when a JAX release moves them,
so the guard is never what silently turns off cluster detection."""

import jax

from flaxtrainer.runtime import distributed


def test_backend_initialisation_check_still_exists():
    from jax._src import xla_bridge

    assert callable(xla_bridge.backends_are_initialized)
    jax.devices()  # the test session has started JAX
    assert distributed._jax_started() is True


def test_cluster_detectors_still_exist(monkeypatch):
    from jax._src import clusters

    detectors = clusters.ClusterEnv._cluster_types
    names = {cls.__name__ for cls in detectors}
    assert {"SlurmCluster", "OmpiCluster"} <= names, names
    for cls in detectors:
        assert callable(cls.is_env_present) and callable(cls.get_process_count)
    for var in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "OMPI_MCA_ess_base_jobid"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.detect_cluster() is None  # no cluster here, and no crash


def test_a_slurm_job_of_two_processes_is_detected(monkeypatch):
    for var, value in {
        "SLURM_JOB_ID": "1",
        "SLURM_STEP_NODELIST": "host[1-2]",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_STEP_NUM_NODES": "2",
    }.items():
        monkeypatch.setenv(var, value)
    assert distributed.detect_cluster() is not None

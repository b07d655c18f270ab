"""How TaskRunner sizes tasks: CPU threads per task from the cores and the workers, the override, GPU devices.

Every task reports what it got (``worker_info``: its share, torch's threads, and the property values of its
Context's platform), so these tests read what the Contexts actually ran with.
"""

import os

import numpy as np
import openmm
import pytest
import torch

from openmm_nnp.freeenergy import TaskRunner, run_equilibrium
from openmm_nnp.freeenergy.parallel import CORES_RESOURCE, TaskShare, available_cores, worker_share


def small_system():
    """Two particles in wells whose spring constant grows with λ: cheap on every platform (PoCL's OpenCL
    crashes on a single particle)."""
    system = openmm.System()
    force = openmm.CustomCompoundBondForce(1, '0.5*(100+lam*300)*(x1^2+y1^2+z1^2)')
    force.addGlobalParameter('lam', 0.0)
    force.addEnergyParameterDerivative('lam')
    for i in range(2):
        system.addParticle(12.0)
        force.addBond([i], [])
    system.addForce(force)
    return system, np.full((2, 3), 0.01)


def reports(platform='CPU', lambdas=2, **kwargs):
    """What each window's task got: the ``worker`` record stored with its result."""
    system, positions = small_system()
    result = run_equilibrium(system, positions, lambdas, lambda_name='lam', n_samples=4, steps_per_sample=2,
                             n_equilibration_steps=0, minimize=False, lambda_dependence='linear', platform=platform,
                             **kwargs)
    return [window['worker'] for window in result.windows]


def test_worker_share_divides_host_cores_among_worker_threads():
    workers = {'tcp://a:2': {'host': 'a', 'nthreads': 1, 'resources': {}},
               'tcp://a:1': {'host': 'a', 'nthreads': 1, 'resources': {}},
               'tcp://a:3': {'host': 'a', 'nthreads': 2, 'resources': {}},
               'tcp://b:1': {'host': 'b', 'nthreads': 1, 'resources': {CORES_RESOURCE: 8}},
               'tcp://b:2': {'host': 'b', 'nthreads': 2, 'resources': {CORES_RESOURCE: 3}}}
    # Host a: 8 cores, 4 worker threads. Host b: the workers' declared cores over their own threads.
    assert worker_share('tcp://a:1', workers, 8) == TaskShare(2)
    assert worker_share('tcp://a:3', workers, 8) == TaskShare(2)
    assert worker_share('tcp://b:1', workers, 2) == TaskShare(8)
    assert worker_share('tcp://b:2', workers, 2) == TaskShare(1)
    assert worker_share('tcp://a:1', workers, 2) == TaskShare(1)  # fewer cores than threads: one each
    assert worker_share('tcp://b:1', workers, 2, threads=5) == TaskShare(5)  # the override wins
    # One GPU per worker: the workers of a host take the devices in turn, in address order.
    devices = [0, 1]
    assert [worker_share(a, workers, 8, devices=devices).device
            for a in ('tcp://a:1', 'tcp://a:2', 'tcp://a:3', 'tcp://b:1', 'tcp://b:2')] == [0, 1, 0, 0, 1]
    assert worker_share('tcp://a:2', workers, 8, devices=['3', '5']).device == '5'


def test_runner_rejects_bad_sizing():
    with pytest.raises(ValueError, match='threads_per_task'):
        TaskRunner(threads_per_task=0)
    with pytest.raises(ValueError, match='devices is empty'):
        TaskRunner(devices=[])


def test_serial_tasks_get_the_machine_or_the_override():
    before = torch.get_num_threads()
    cores = available_cores()
    for report in reports(runner=TaskRunner('serial', progress=False)):
        assert report['threads'] == cores and report['torch_threads'] == cores
        assert report['platform_properties']['Threads'] == str(cores)
    override = 1 if cores > 1 else 2
    for report in reports(runner=TaskRunner('serial', progress=False, threads_per_task=override)):
        assert report['threads'] == override and report['torch_threads'] == override
        assert report['platform_properties']['Threads'] == str(override)
    assert torch.get_num_threads() == before  # restored in this process
    # Threads set in platform_properties are the user's choice and are kept.
    for report in reports(runner=TaskRunner('serial', progress=False, threads_per_task=override),
                          platform_properties={'Threads': '3'}):
        assert report['platform_properties']['Threads'] == '3' and report['torch_threads'] == override


def test_local_workers_share_the_cores_and_take_a_device_each():
    """The runner's own LocalCluster, one one-thread worker per device: each task gets half of the cores (on
    this machine's platform: the CPU Context's Threads, torch's threads) and its worker's device."""
    pytest.importorskip('distributed')
    share = max(1, available_cores() // 2)
    got = reports(lambdas=4, runner=TaskRunner('dask', devices=[0, 1], progress=False))
    for report in got:
        assert report['threads'] == share and report['torch_threads'] == share
        assert report['platform_properties']['Threads'] == str(share)
    by_pid = {}
    for report in got:
        by_pid.setdefault(report['pid'], set()).add(report['device'])
    assert os.getpid() not in by_pid
    assert sorted(by_pid.values(), key=min) == [{0}, {1}]  # two workers, one device each


def test_scheduler_workers_with_declared_cores_and_devices():
    """Workers of a separate scheduler (as ``dask worker --nthreads 2 --resources cores=4`` starts them): the
    override, then the declared cores over the worker's threads; devices handed out per worker."""
    distributed = pytest.importorskip('distributed')
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, resources={CORES_RESOURCE: 4},
                                  processes=True, dashboard_address=None) as cluster:
        runner = TaskRunner('dask', scheduler_address=cluster.scheduler_address, progress=False)
        for report in reports(runner=runner):
            assert report['threads'] == 2 and report['torch_threads'] == 2
            assert report['platform_properties']['Threads'] == '2'
        runner = TaskRunner('dask', scheduler_address=cluster.scheduler_address, progress=False,
                            threads_per_task=3, devices=['7'])
        for report in reports(runner=runner, platform='Reference'):
            assert report['threads'] == 3 and report['device'] == '7'
            assert 'DeviceIndex' not in report['platform_properties']  # not a GPU platform


def test_opencl_context_on_the_task_device():
    try:
        openmm.Platform.getPlatformByName('OpenCL')
    except Exception:
        pytest.skip('no OpenCL platform')
    report = reports(platform='OpenCL', runner=TaskRunner('serial', progress=False, devices=[0]))[0]
    assert report['device'] == 0 and report['platform_properties']['DeviceIndex'] == '0'
    n_devices = 16  # no OpenCL platform here has that many devices: the index must reach the Context
    with pytest.raises(Exception, match=f'DeviceIndex: {n_devices}'):
        reports(platform='OpenCL', runner=TaskRunner('serial', progress=False, devices=[n_devices], max_retries=0))

"""Running independent tasks (λ windows, switching trajectories) serially or on Dask distributed.

Each finished task's result is validated, then written atomically (temporary file + rename) to
``<output_dir>/tasks/<name>.pkl``; a rerun loads those and runs only the missing tasks. With Dask a task
whose worker dies is rescheduled by the scheduler on another worker; a task that raises is retried
(``max_retries``), and a result that fails validation is resubmitted, so a run ends with every result or
with an error that says which task failed.

Each task gets a share of the machine it runs on (``TaskShare``): CPU threads (OpenMM's CPU ``Threads`` and
torch's intra-op threads) and, with ``devices``, a GPU (``DeviceIndex``). On Dask the share is decided on the
worker when the task starts, from the scheduler's list of workers: the host's cores divided among the worker
threads on that host, or the worker's declared ``cores`` resource (``dask worker --resources cores=N``).
"""

import contextvars
import dataclasses
import logging
import os
import pickle
import socket
import sys
import time

from openmm_nnp.files import atomicWrite

logger = logging.getLogger('openmm_nnp.freeenergy')

CORES_RESOURCE = 'cores'  # Dask worker resource: the cores a worker may use (shared among its threads)


@dataclasses.dataclass(frozen=True)
class TaskShare:
    """What a running task may use: ``threads`` CPU threads and the GPU ``device`` (an index; None: the
    platform's default device)."""
    threads: int
    device: object = None


_current_share = contextvars.ContextVar('openmm_nnp_task_share', default=None)


def current_share():
    """The TaskShare of the task running in this thread, or None outside TaskRunner tasks."""
    return _current_share.get()


def available_cores():
    """Cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_share(address, workers, cores, threads=None, devices=None):
    """The TaskShare of a task on the Dask worker ``address``.

    ``workers``: the scheduler's workers ``{address: {'host', 'nthreads', 'resources'}}``
    (``Client.scheduler_info()['workers']``); ``cores``: the cores of the worker's host. Threads: ``threads``
    if given; else the worker's ``cores`` resource divided among its threads; else the host's cores divided
    among all worker threads on that host. Device: the workers of a host, in address order, take
    ``devices`` in turn (one worker per GPU when there are as many workers as devices).
    """
    me = workers[address]
    siblings = sorted(a for a, w in workers.items() if w['host'] == me['host'])
    if threads is None:
        declared = (me.get('resources') or {}).get(CORES_RESOURCE)
        if declared is not None:
            threads = int(declared) // me['nthreads']
        else:
            threads = cores // sum(workers[a]['nthreads'] for a in siblings)
    device = devices[siblings.index(address) % len(devices)] if devices else None
    return TaskShare(max(1, int(threads)), device)


def _share_here(threads, devices):
    """The TaskShare of a task starting now in this process, and whether it is a Dask worker."""
    try:
        from distributed import get_client, get_worker
        worker = get_worker()
    except (ImportError, ValueError):  # not in a Dask task: the serial runner has the whole machine
        return TaskShare(max(1, int(threads or available_cores())), devices[0] if devices else None), False
    workers = get_client().scheduler_info()['workers']
    if worker.address not in workers:  # not registered yet: count it alone
        workers = dict(workers, **{worker.address: {'host': worker.ip, 'nthreads': worker.state.nthreads,
                                                    'resources': worker.state.total_resources}})
    return worker_share(worker.address, workers, available_cores(), threads, devices), True


def share_properties(platform_name, properties):
    """OpenMM platform properties for a Context created in the running task: ``properties`` plus, unless they
    set them already, the task's CPU ``Threads`` (CPU platform) or ``DeviceIndex`` (CUDA, OpenCL, HIP)."""
    properties = dict(properties or {})
    share = current_share()
    if share is not None:
        if platform_name == 'CPU':
            properties.setdefault('Threads', str(share.threads))
        elif platform_name in ('CUDA', 'OpenCL', 'HIP') and share.device is not None:
            properties.setdefault('DeviceIndex', str(share.device))
    return properties


def run_task(function, argument, threads=None, devices=None):
    """Call ``function(argument)`` with this process's share of the machine: torch's intra-op threads set to
    it and ``current_share()`` telling the task (``_md`` sets the Context's Threads and DeviceIndex from it).
    Outside Dask, torch's setting is restored afterwards."""
    import torch
    share, in_worker = _share_here(threads, devices)
    previous = torch.get_num_threads()
    token = _current_share.set(share)
    torch.set_num_threads(share.threads)
    try:
        return function(argument)
    finally:
        _current_share.reset(token)
        if not in_worker:
            torch.set_num_threads(previous)


def worker_info(context=None):
    """Where a task ran and what it got (stored with its result): host, process, its TaskShare, torch's
    intra-op threads and, given the task's Context, its platform and that platform's property values."""
    import torch
    share = current_share()
    info = {'host': socket.gethostname(), 'pid': os.getpid(), 'threads': None if share is None else share.threads,
            'device': None if share is None else share.device, 'torch_threads': torch.get_num_threads()}
    if context is not None:
        platform = context.getPlatform()
        info['platform'] = platform.getName()
        info['platform_properties'] = {name: platform.getPropertyValue(context, name)
                                       for name in platform.getPropertyNames()}
    return info


class ResultStore:
    """Finished task results in a directory, one pickle per task, written atomically."""

    def __init__(self, directory):
        self.directory = os.path.join(os.fspath(directory), 'tasks')
        os.makedirs(self.directory, exist_ok=True)

    def path(self, name):
        if not name or '/' in name or name.startswith('.'):
            raise ValueError(f'Invalid task name {name!r}.')
        return os.path.join(self.directory, name + '.pkl')

    def has(self, name):
        return os.path.exists(self.path(name))

    def load(self, name):
        with open(self.path(name), 'rb') as f:
            return pickle.load(f)

    def save(self, name, result):
        atomicWrite(self.path(name), pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


class TaskFailed(RuntimeError):
    pass


class TaskRunner:
    """Runs named tasks ``{name: (function, argument)}`` and returns ``{name: result}``.

    Parameters
    ----------
    engine : 'serial' or 'dask'
        'serial' runs tasks one after the other in this process. 'dask' uses Dask distributed: the ``client``
        given, else a client of the scheduler at ``scheduler_address`` (a real cluster, e.g. started with
        ``dask scheduler`` / ``dask worker`` or dask-jobqueue), else a ``LocalCluster`` of ``n_workers``
        processes (default: one per device in ``devices``, else one per core) with one thread each, closed at
        the end of ``run``.
    threads_per_task : int, optional
        CPU threads of each task (OpenMM CPU ``Threads``, torch intra-op threads). Default: the machine's cores
        shared among the tasks that run at once: all of them serially; on Dask, the host's cores divided among
        the worker threads on that host, or a worker's ``cores`` resource divided among its threads.
    devices : sequence, optional
        GPU device indices (CUDA/OpenCL ``DeviceIndex``). The Dask workers of a host take them in turn, in
        address order: start as many workers per host as it has GPUs. Serially the first is used. With
        dask-cuda workers pass ``[0]`` (device 0 is each worker's own GPU). None: OpenMM picks the device.
    max_retries : int
        How many times a task that raised, or whose result failed validation, is run again.
    progress : bool
        Show a progress bar (tqdm) on stderr.
    """

    def __init__(self, engine='serial', client=None, scheduler_address=None, n_workers=None, max_retries=2,
                 progress=True, threads_per_task=None, devices=None):
        if engine not in ('serial', 'dask'):
            raise ValueError(f"engine must be 'serial' or 'dask', not {engine!r}.")
        if engine == 'serial' and (client is not None or scheduler_address is not None):
            raise ValueError("A Dask client or scheduler address was given with engine='serial'; use engine='dask'.")
        self.engine = engine
        self.client = client
        self.scheduler_address = scheduler_address
        self.n_workers = n_workers
        if threads_per_task is not None and int(threads_per_task) < 1:
            raise ValueError(f'threads_per_task must be at least 1, not {threads_per_task!r}.')
        self.threads_per_task = None if threads_per_task is None else int(threads_per_task)
        self.devices = None if devices is None else list(devices)
        if self.devices == []:
            raise ValueError('devices is empty; pass None for the default device.')
        self.max_retries = int(max_retries)
        self.progress = progress
        self.executed = []  # names of the tasks this runner has run (not loaded from disk)

    @property
    def parallel(self):
        return self.engine == 'dask'

    def run(self, tasks, store=None, validate=None, description='tasks'):
        results = {}
        todo = {}
        for name, task in tasks.items():
            if store is not None and store.has(name):
                try:
                    result = store.load(name)
                    if validate is not None:
                        validate(name, result)
                    results[name] = result
                    continue
                except Exception as e:  # an unreadable or invalid file: run the task again
                    logger.warning('Stored result of %s is unusable (%s); running it again.', name, e)
            todo[name] = task
        if results:
            logger.info('%s: %d of %d already finished in %s', description, len(results), len(tasks),
                        store.directory)
        if not todo:
            return results
        bar = self._progress_bar(len(tasks), len(results), description)
        try:
            if self.engine == 'serial':
                self._run_serial(todo, results, store, validate, bar)
            else:
                self._run_dask(todo, results, store, validate, bar)
        finally:
            if bar is not None:
                bar.close()
        return results

    def _progress_bar(self, total, done, description):
        if not self.progress:
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=total, initial=done, desc=description, file=sys.stderr)

    def _accept(self, name, result, results, store, validate, bar):
        if validate is not None:
            validate(name, result)
        if store is not None:
            store.save(name, result)
        results[name] = result
        self.executed.append(name)
        if bar is not None:
            bar.update(1)

    def _run_serial(self, todo, results, store, validate, bar):
        for name, (function, argument) in todo.items():
            for attempt in range(self.max_retries + 1):
                try:
                    self._accept(name, run_task(function, argument, self.threads_per_task, self.devices),
                                 results, store, validate, bar)
                    break
                except KeyboardInterrupt:
                    raise
                except Exception as e:
                    if attempt == self.max_retries:
                        raise TaskFailed(f'Task {name} failed {attempt + 1} times; last error: {e!r}') from e
                    logger.warning('Task %s failed (%r); retrying.', name, e)

    def _submit(self, client, name, function, argument):
        return client.submit(run_task, function, argument, self.threads_per_task, self.devices,
                             key=f'{name}-{time.time_ns()}', pure=False, retries=self.max_retries)

    def _run_dask(self, todo, results, store, validate, bar):
        try:
            from distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise ImportError("engine='dask' needs Dask distributed: pip install distributed") from None
        client, cluster, own_client = self.client, None, self.client is None
        if own_client:
            if self.scheduler_address is not None:
                client = Client(self.scheduler_address)
            else:
                n_workers = self.n_workers or (len(self.devices) if self.devices else available_cores())
                cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
                client = Client(cluster)
                client.wait_for_workers(n_workers)
        try:
            attempts = {name: 0 for name in todo}
            futures = {}
            submitted = []
            for name, (function, argument) in todo.items():
                future = self._submit(client, name, function, argument)
                futures[future.key] = name
                submitted.append(future)
            pending = as_completed(submitted)
            for future in pending:
                name = futures.pop(future.key)
                try:
                    result = future.result()
                    self._accept(name, result, results, store, validate, bar)
                except Exception as e:
                    attempts[name] += 1
                    if attempts[name] > self.max_retries:
                        raise TaskFailed(f'Task {name} failed after {attempts[name]} submissions; last error: '
                                         f'{e!r}') from e
                    logger.warning('Task %s failed or returned an invalid result (%r); resubmitting.', name, e)
                    function, argument = todo[name]
                    retry = self._submit(client, name, function, argument)
                    futures[retry.key] = name
                    pending.add(retry)
                finally:
                    future.release()
        finally:
            if own_client:
                client.close()
            if cluster is not None:
                cluster.close()

"""Running independent tasks (λ windows, switching trajectories) serially or on Dask distributed.

Each finished task's result is validated, then written atomically (temporary file + rename) to
``<output_dir>/tasks/<name>.pkl``; a rerun loads those and runs only the missing tasks. With Dask a task
whose worker dies is rescheduled by the scheduler on another worker; a task that raises is retried
(``max_retries``), and a result that fails validation is resubmitted, so a run ends with every result or
with an error that says which task failed.
"""

import logging
import os
import pickle
import socket
import sys
import tempfile
import time

logger = logging.getLogger('openmm_nnp.freeenergy')


def worker_info():
    """Where a task ran (stored with its result)."""
    return {'host': socket.gethostname(), 'pid': os.getpid()}


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
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix='.' + name, suffix='.tmp')
        try:
            with os.fdopen(fd, 'wb') as f:
                pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(name))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


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
        processes with one thread each, closed at the end of ``run``.
    max_retries : int
        How many times a task that raised, or whose result failed validation, is run again.
    progress : bool
        Show a progress bar (tqdm) on stderr.
    """

    def __init__(self, engine='serial', client=None, scheduler_address=None, n_workers=None, max_retries=2,
                 progress=True):
        if engine not in ('serial', 'dask'):
            raise ValueError(f"engine must be 'serial' or 'dask', not {engine!r}.")
        if engine == 'serial' and (client is not None or scheduler_address is not None):
            raise ValueError("A Dask client or scheduler address was given with engine='serial'; use engine='dask'.")
        self.engine = engine
        self.client = client
        self.scheduler_address = scheduler_address
        self.n_workers = n_workers
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
                    self._accept(name, function(argument), results, store, validate, bar)
                    break
                except KeyboardInterrupt:
                    raise
                except Exception as e:
                    if attempt == self.max_retries:
                        raise TaskFailed(f'Task {name} failed {attempt + 1} times; last error: {e!r}') from e
                    logger.warning('Task %s failed (%r); retrying.', name, e)

    def _run_dask(self, todo, results, store, validate, bar):
        try:
            from distributed import Client, LocalCluster, as_completed
        except ImportError:
            raise ImportError("engine='dask' needs Dask distributed: pip install distributed") from None
        client, cluster = self.client, None
        if client is None:
            if self.scheduler_address is not None:
                client = Client(self.scheduler_address)
            else:
                cluster = LocalCluster(n_workers=self.n_workers or max(1, (os.cpu_count() or 2)),
                                       threads_per_worker=1, processes=True, dashboard_address=None)
                client = Client(cluster)
        try:
            attempts = {name: 0 for name in todo}
            futures = {}
            submitted = []
            for name, (function, argument) in todo.items():
                future = client.submit(function, argument, key=f'{name}-{time.time_ns()}', pure=False,
                                       retries=self.max_retries)
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
                    retry = client.submit(function, argument, key=f'{name}-{time.time_ns()}', pure=False,
                                          retries=self.max_retries)
                    futures[retry.key] = name
                    pending.add(retry)
                finally:
                    future.release()
        finally:
            if cluster is not None:
                client.close()
                cluster.close()

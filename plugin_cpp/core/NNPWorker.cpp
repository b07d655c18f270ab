#include "NNPWorker.h"
#include "openmm/OpenMMException.h"
#ifdef _OPENMP
#include <omp.h>
#endif

using namespace NNPPlugin;
using namespace std;

NNPWorker::NNPWorker(int torchThreads) : torchThreads(torchThreads), hasJob(false), finished(true), stopping(false), busy(false) {
    thread = std::thread(&NNPWorker::run, this);
}

NNPWorker::~NNPWorker() {
    wait();
    {
        lock_guard<std::mutex> lock(mutex);
        stopping = true;
    }
    changed.notify_all();
    thread.join();
}

void NNPWorker::submit(function<void()> newJob) {
    if (busy)
        throw OpenMM::OpenMMException("NNPWorker: a job was submitted while the previous one had not been waited for.");
    {
        lock_guard<std::mutex> lock(mutex);
        job = std::move(newJob);
        hasJob = true;
        finished = false;
    }
    busy = true;
    changed.notify_all();
}

void NNPWorker::wait() {
    if (!busy)
        return;
    unique_lock<std::mutex> lock(mutex);
    changed.wait(lock, [this] { return finished; });
    busy = false;
}

void NNPWorker::run() {
    unique_lock<std::mutex> lock(mutex);
    while (true) {
        changed.wait(lock, [this] { return hasJob || stopping; });
        if (stopping)
            return;
        function<void()> current = std::move(job);
        hasJob = false;
        lock.unlock();
#ifdef _OPENMP
        // torch's CPU backend runs its parallel regions on OpenMP threads, as many as the calling thread's
        // nthreads-var. Set it for this thread alone, before every job: torch's lazy per-thread
        // initialization may reset it to the process-wide count once (at::set_num_threads here would
        // change that count for threads started later).
        if (torchThreads > 0 && omp_get_max_threads() != torchThreads)
            omp_set_num_threads(torchThreads);
#endif
        try {
            current();
        }
        catch (...) {
            // Jobs catch their own exceptions; anything else must not terminate the process.
        }
        lock.lock();
        finished = true;
        changed.notify_all();
    }
}

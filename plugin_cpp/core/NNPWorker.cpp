#include "NNPWorker.h"
#include "NNPTorchOps.h"
#include "openmm/OpenMMException.h"
#include <ATen/Parallel.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// MKL (statically inside libtorch_cpu in PyTorch's x86 wheels) keeps its own per-thread thread count, which
// ATen's lazy initialization sets too. Declared weak: absent from torch builds without MKL.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak)); // mkl_service.h: mkl_set_num_threads_local

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
    // ATen sets a thread's OpenMP thread count to the process-wide one the first time that thread runs a
    // parallel region, separately for each library's copy of that (inline) code: libtorch, this library and
    // the operator library. Let each do so now, so that the count set below stays.
    at::get_num_threads();
    at::parallel_for(0, 1, 1, [](int64_t, int64_t) {});
    initializeParallelOnThisThread();
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
        // nthreads-var. Set it for this thread alone (at::set_num_threads would also change the count that
        // threads started later take), before every job in case a library's lazy initialization above was missed.
        if (torchThreads > 0 && omp_get_max_threads() != torchThreads)
            omp_set_num_threads(torchThreads);
#endif
        if (torchThreads > 0 && MKL_Set_Num_Threads_Local != nullptr)
            MKL_Set_Num_Threads_Local(torchThreads);
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

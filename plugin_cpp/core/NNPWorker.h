#ifndef OPENMM_NNP_WORKER_H_
#define OPENMM_NNP_WORKER_H_

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace NNPPlugin {

/**
 * One background thread that runs one job at a time, for evaluating a model while OpenMM computes
 * the other forces. submit() hands over a job (the previous one must have been waited for); wait()
 * blocks until it has finished and rethrows nothing: a job records its own exceptions. The destructor
 * waits for a running job, then stops the thread, so a job never outlives its owner.
 */
class NNPWorker {
public:
    /** @param torchThreads  torch's intra-op threads on the worker thread (0: leave torch's default) */
    explicit NNPWorker(int torchThreads);
    ~NNPWorker();
    NNPWorker(const NNPWorker&) = delete;
    NNPWorker& operator=(const NNPWorker&) = delete;
    /** Start `job` on the worker thread. A job submitted before must have been waited for. */
    void submit(std::function<void()> job);
    /** Block until the job submitted last has finished (at once if there is none). */
    void wait();
    /** Whether a job was submitted and not yet waited for. */
    bool isBusy() const {
        return busy;
    }
private:
    void run();
    int torchThreads;
    std::mutex mutex;
    std::condition_variable changed;
    std::function<void()> job;
    bool hasJob, finished, stopping, busy;
    std::thread thread;
};

} // namespace NNPPlugin

#endif /*OPENMM_NNP_WORKER_H_*/

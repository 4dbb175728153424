#include "runtime/cli/interrupt.h"

#include <signal.h>

#include <atomic>

namespace hetmoe::cli {
namespace {

std::atomic<bool> g_interrupted{false};

extern "C" void on_interrupt(int) {
  g_interrupted.store(true);
  signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the process
}

}  // namespace

void install_interrupt_handler() {
  g_interrupted.store(false);
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
}

bool interrupted() { return g_interrupted.load(); }

}  // namespace hetmoe::cli

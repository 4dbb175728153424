#pragma once
// Ctrl-C for the commands that generate (generate, bench): the first SIGINT sets a flag the generation loop polls,
// so the command stops, writes its trace and statistics and exits with kExitInterrupted (130); a second SIGINT
// while it finishes ends the process at once (the default action).

namespace hetmoe::cli {

/// Installs the handler (SA_RESTART: reads and writes in progress continue).
void install_interrupt_handler();
/// True once SIGINT arrived after install_interrupt_handler().
bool interrupted();

}  // namespace hetmoe::cli

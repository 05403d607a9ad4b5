// `xpd`: the single command-line entry point. Each subcommand lives in its own
// file; this only dispatches.
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "services/cli/commands.h"

namespace {

constexpr char kUsage[] =
    "usage: xpd <command> [flags]\n"
    "\n"
    "commands:\n"
    "  up             run a local cluster: controller, prefill, decode and router processes\n"
    "  generate       generate from token ids, locally (--model) or through a cluster (--router)\n"
    "  logits         write a prompt's logits (or MTP logits) as .npy\n"
    "  bench          measure prefill/decode throughput and memory\n"
    "  dummy-model    write a checkpoint of deterministic random (dummy) weights\n"
    "  tokenize       text to token ids (JSON lines on stdin and stdout)\n"
    "  detokenize     token ids to text (JSON lines on stdin and stdout)\n"
    "  chat-template  conversations to text and ids with the chat template (JSON lines)\n"
    "  status         a cluster's ranks and its EP group's expert placement and balance\n"
    "  rebalance      rebalance an EP group's experts now (or --dry-run to preview)\n";

}  // namespace

int main(int argc, char** argv) {
  using Command = int (*)(const std::vector<std::string>&);
  const std::map<std::string, Command> commands = {
      {"generate", xpd::cli::RunGenerateCommand},
      {"logits", xpd::cli::RunLogitsCommand},
      {"bench", xpd::cli::RunBenchCommand},
      {"dummy-model", xpd::cli::RunDummyModelCommand},
      {"up", xpd::cli::RunUpCommand},
      {"tokenize", xpd::cli::RunTokenizeCommand},
      {"detokenize", xpd::cli::RunDetokenizeCommand},
      {"chat-template", xpd::cli::RunChatTemplateCommand},
      {"status", xpd::cli::RunStatusCommand},
      {"rebalance", xpd::cli::RunRebalanceCommand},
  };
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "help") {
    std::cerr << kUsage;
    return argc < 2 ? 2 : 0;
  }
  auto it = commands.find(argv[1]);
  if (it == commands.end()) {
    std::cerr << "xpd: unknown command '" << argv[1] << "'\n\n" << kUsage;
    return 2;
  }
  return it->second(std::vector<std::string>(argv + 2, argv + argc));
}

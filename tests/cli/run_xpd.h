// Runs the built `xpd` binary (XPD_BINARY, set by CMake) as a real process
// for the CLI tests: stdin from a string, stdout and stderr captured.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace xpd::testing {

struct ProcessResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string ReadFileText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// `xpd <args>` with `input` on stdin. The temporary files are per process
// (ctest runs test cases as parallel processes) and removed afterwards.
inline ProcessResult RunXpd(const std::string& args, const std::string& input = "") {
  const std::filesystem::path dir(::testing::TempDir());
  const std::string stem = "xpd_cli_" + std::to_string(::getpid());
  const std::string in_path = (dir / (stem + ".in")).string();
  const std::string err_path = (dir / (stem + ".err")).string();
  std::ofstream(in_path, std::ios::binary) << input;
  const std::string command =
      std::string(XPD_BINARY) + " " + args + " < " + in_path + " 2> " + err_path;
  ProcessResult run;
  if (FILE* pipe = popen(command.c_str(), "r"); pipe != nullptr) {
    std::array<char, 4096> buffer;
    size_t n;
    while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) run.out.append(buffer.data(), n);
    const int status = pclose(pipe);
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  run.err = ReadFileText(err_path);
  std::cerr << run.err;  // into the test log
  std::filesystem::remove(in_path);
  std::filesystem::remove(err_path);
  return run;
}

}  // namespace xpd::testing

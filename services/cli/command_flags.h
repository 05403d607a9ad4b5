// The CLI's flag parsing lives in common/base (the service mains share it).
#pragma once

#include "common/base/command_flags.h"

namespace xpd::cli {
using base::CommandFlags;
using base::ExitStatus;
}  // namespace xpd::cli

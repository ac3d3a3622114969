// The JSON type of bkptool. ordered_json keeps keys in the order they were inserted or
// received, so --json prints backupd's objects as the server wrote them ("ok" first) instead
// of alphabetically.
#pragma once

#include <nlohmann/json.hpp>

namespace bkp::tools {

using Json = nlohmann::ordered_json;

}  // namespace bkp::tools

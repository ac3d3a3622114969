// "Did you mean ...?" for a mistyped command: the candidate nearest to what was typed, by
// Damerau-Levenshtein distance, when it is near enough to be what was meant.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bkp::tools {

// The edits that turn a into b: insert, delete or replace a character, or swap two adjacent
// ones (the commonest typo, "histroy"), each counted once (optimal string alignment: no
// substring is edited twice). ASCII case is ignored.
size_t edit_distance(std::string_view a, std::string_view b);

// The candidate nearest to typed, if it is at most max(1, typed.size() / 3) edits away: one
// typo in a short word, two in "histroy"; further than that the "suggestion" would be a guess.
// On a tie, the first such candidate in the given order. nullopt if none is near enough.
std::optional<std::string> nearest(std::string_view typed,
                                   const std::vector<std::string>& candidates);

}  // namespace bkp::tools

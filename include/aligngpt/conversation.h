#pragma once
// Conversation templates as the official AlignGPT repository's src/utils/conversation.py renders
// them (Conversation.get_prompt), byte for byte: plain (stage 1), vicuna_v1 (stage 2 and the
// evaluation scripts; the default, as the reference's default_conversation), llava_v0 (what the
// reference's cli.py picks for a model name without "v1") and llama_2.
//
//   auto c = conversation::make("vicuna_v1");
//   c.append(c.roles[0], "<image>\n" + question);
//   c.append(c.roles[1], std::nullopt);               // the empty assistant turn to be generated
//   std::string prompt = c.prompt();                  // ... USER: <image>\nQ ASSISTANT:
//   std::string stop = c.stop_string();               // "</s>" (cli.py's stop_str)
//
// A message that is std::nullopt (Python None) or empty is "not there": SINGLE and TWO write the
// role and ":" with nothing after it, PLAIN and LLAMA_2 write nothing. Where the reference raises
// (PLAIN with an assistant message, whose sep2 is None; LLAMA_2 starting with an empty or
// assistant message) prompt() throws.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aligngpt/config.h"

namespace aligngpt::conversation {

enum class separator_style { single, two, plain, llama_2 };

struct message {
    std::string role;
    std::optional<std::string> text;
};

struct conversation {
    std::string name;
    std::string system;
    std::vector<std::string> roles;  ///< user, assistant
    separator_style style = separator_style::single;
    std::string sep = "###";
    std::optional<std::string> sep2;  ///< None in plain and llava_v0
    std::vector<message> messages;

    void append(std::string role, std::optional<std::string> text) { messages.push_back({std::move(role), std::move(text)}); }

    /// The string to generate after or to train on (Conversation.get_prompt).
    std::string prompt() const {
        const auto has = [](const message& m) { return m.text && !m.text->empty(); };
        std::string ret;
        switch (style) {
            case separator_style::single:
                ret = system + sep;
                for (const message& m : messages) ret += has(m) ? m.role + ": " + *m.text + sep : m.role + ":";
                break;
            case separator_style::two:
                ret = system + sep;
                for (std::size_t i = 0; i < messages.size(); i++) {
                    const message& m = messages[i];
                    ret += has(m) ? m.role + ": " + *m.text + separator(i) : m.role + ":";
                }
                break;
            case separator_style::plain:
                ret = system;
                for (std::size_t i = 0; i < messages.size(); i++)
                    if (has(messages[i])) ret += *messages[i].text + separator(i);
                break;
            case separator_style::llama_2:
                for (std::size_t i = 0; i < messages.size(); i++) {
                    const message& m = messages[i];
                    if (i == 0)
                        ALIGNGPT_CHECK(has(m) && m.role == roles.at(0), "conversation ", name,
                                       ": the first message must be a non-empty user message (as the reference asserts)");
                    if (!has(m)) continue;
                    std::string text = *m.text;
                    if (i == 0) text = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + text;
                    if (i % 2 == 0)
                        ret += sep + "[INST] " + text + " [/INST]";
                    else
                        ret += " " + text + " " + separator(1);
                }
                ret = lstrip_chars(ret, sep);
                break;
        }
        return ret;
    }

    /// The stop string of the reference's cli.py and eval scripts: sep2 for the TWO style, else sep.
    std::string stop_string() const { return style == separator_style::two ? sep2.value_or("") : sep; }

private:
    /// seps[i % 2] with seps = [sep, sep2]; the reference fails on sep2 = None (str + None).
    std::string separator(std::size_t i) const {
        if (i % 2 == 0) return sep;
        ALIGNGPT_CHECK(sep2.has_value(), "conversation ", name,
                       ": an assistant message needs sep2, which this template does not have (the reference "
                       "raises TypeError; plain is for single-turn captions)");
        return *sep2;
    }
    /// Python's str.lstrip(chars): drops leading characters that are in the set `chars`.
    static std::string lstrip_chars(const std::string& s, std::string_view chars) {
        std::size_t i = 0;
        while (i < s.size() && chars.find(s[i]) != std::string_view::npos) i++;
        return s.substr(i);
    }
};

inline const std::vector<std::string_view>& template_names() {
    static const std::vector<std::string_view> names{"vicuna_v1", "plain", "llava_v0", "llama_2"};
    return names;
}

/// A fresh conversation of template `name` (one of template_names(); "v1" is vicuna_v1, as in
/// the reference's conv_templates). Unknown names are refused with the list.
inline conversation make(std::string_view name = "vicuna_v1") {
    conversation c;
    if (name == "vicuna_v1" || name == "v1") {
        c = {"vicuna_v1",
             "A chat between a curious user and an artificial intelligence assistant. "
             "The assistant gives helpful, detailed, and polite answers to the user's questions.",
             {"USER", "ASSISTANT"},
             separator_style::two,
             " ",
             "</s>",
             {}};
    } else if (name == "plain") {
        c = {"plain", "", {"", ""}, separator_style::plain, "\n", std::nullopt, {}};
    } else if (name == "llava_v0") {
        c = {"llava_v0",
             "A chat between a curious human and an artificial intelligence assistant. "
             "The assistant gives helpful, detailed, and polite answers to the human's questions.",
             {"Human", "Assistant"},
             separator_style::single,
             "###",
             std::nullopt,
             {}};
    } else if (name == "llama_2") {
        c = {"llama_2",
             "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while "
             "being safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, "
             "dangerous, or illegal content. Please ensure that your responses are socially unbiased and positive "
             "in nature.\n\nIf a question does not make any sense, or is not factually coherent, explain why "
             "instead of answering something not correct. If you don't know the answer to a question, please "
             "don't share false information.",
             {"USER", "ASSISTANT"},
             separator_style::llama_2,
             "<s>",
             "</s>",
             {}};
    } else {
        std::string known;
        for (std::string_view n : template_names()) known += (known.empty() ? "" : ", ") + std::string(n);
        fail("conversation: unknown template \"", name.substr(0, 64), name.size() > 64 ? "...\"" : "\"", " (known: ", known, ")");
    }
    return c;
}

}  // namespace aligngpt::conversation

#pragma once
// Scoring of benchmark answers the way the paper's benchmarks do (docs/eval.md): POPE, MME, VQAv2
// soft accuracy and multiple-choice letter matching. Pure functions over parsed records, plus the
// readers of the LLaVA evaluation files (answers JSONL; annotations per task). No model code.
//
// Each normalisation follows the official script it names, including its quirks:
//   pope_says_no   LLaVA llava/eval/eval_pope.py: first sentence (text before the first '.'),
//                  commas removed, split on ' '; "No", "no" or "not" as a word -> no, else yes.
//   mme_parse      MME eval_tool/calculation.py parse_pred_ans on the lower-cased answer: "yes"/"no"
//                  as is, else "yes" in the first 4 bytes -> yes, "no" in them -> no, else other.
//   vqa_normalize  LLaVA llava/eval/m4c_evaluator.py EvalAIAnswerProcessor (the official VQA
//                  evaluation's punctuation, digit and article rules). Its PERIOD_STRIP pattern
//                  removes every '.' not followed by a digit, at most 32 times (re.UNICODE is passed
//                  as sub's count argument); lower() and split() are ASCII here.
//   mc_letter      LLaVA llava/eval/eval_science_qa.py: the whole answer is a letter A-E, or it
//                  starts "X. ", or "The answer is X" followed by one more character occurs exactly once.
//
// Errors name the file and the line: "A.jsonl:3: field 'text' must be a string, got 5".
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "aligngpt/config.h"
#include "aligngpt/io/file.h"
#include "aligngpt/io/json.h"

namespace aligngpt::eval {

// ---------------------------------------------------------------------------------------------
// Normalisations
// ---------------------------------------------------------------------------------------------

namespace detail {

/// Python's str.isspace() for ASCII (str.split() and str.strip() without arguments).
inline bool py_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r' || (c >= '\x1c' && c <= '\x1f');
}
inline std::string ascii_lower(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return s;
}
inline std::string py_strip(std::string_view s) {
    std::size_t b = 0, e = s.size();
    while (b < e && py_space(s[b])) b++;
    while (e > b && py_space(s[e - 1])) e--;
    return std::string(s.substr(b, e - b));
}
/// Python's str.split() (runs of whitespace, no empty items).
inline std::vector<std::string> py_split(std::string_view s) {
    std::vector<std::string> out;
    std::size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && py_space(s[i])) i++;
        std::size_t j = i;
        while (j < s.size() && !py_space(s[j])) j++;
        if (j > i) out.emplace_back(s.substr(i, j - i));
        i = j;
    }
    return out;
}
/// Python's str.split(sep) for one character (empty items kept).
inline std::vector<std::string> split_on(std::string_view s, char sep) {
    std::vector<std::string> out;
    std::size_t i = 0;
    for (;;) {
        const std::size_t j = s.find(sep, i);
        out.emplace_back(s.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i));
        if (j == std::string_view::npos) return out;
        i = j + 1;
    }
}
inline std::string replace_all(std::string s, std::string_view from, std::string_view to) {
    if (from.empty()) return s;
    std::string out;
    std::size_t i = 0;
    for (;;) {
        const std::size_t j = s.find(from, i);
        if (j == std::string::npos) break;
        out.append(s, i, j - i);
        out.append(to);
        i = j + from.size();
    }
    out.append(s, i, std::string::npos);
    return out;
}
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace detail

/// POPE (eval_pope.py): true when the answer reads as "no".
inline bool pope_says_no(std::string_view text) {
    std::string t(text);
    if (const auto dot = t.find('.'); dot != std::string::npos) t = t.substr(0, dot);
    t = detail::replace_all(t, ",", "");
    for (const std::string& w : detail::split_on(t, ' '))
        if (w == "No" || w == "not" || w == "no") return true;
    return false;
}

enum class yes_no { yes, no, other };

/// MME (calculation.py parse_pred_ans, after lower()).
inline yes_no mme_parse(std::string_view text) {
    const std::string t = detail::ascii_lower(std::string(text));
    if (t == "yes") return yes_no::yes;
    if (t == "no") return yes_no::no;
    const std::string prefix = t.substr(0, 4);
    if (prefix.find("yes") != std::string::npos) return yes_no::yes;
    if (prefix.find("no") != std::string::npos) return yes_no::no;
    return yes_no::other;
}

/// VQA answer normalisation (m4c_evaluator.py EvalAIAnswerProcessor.__call__).
inline std::string vqa_normalize(std::string_view answer) {
    using namespace detail;
    // word_tokenize
    std::string s = ascii_lower(std::string(answer));
    s = replace_all(replace_all(replace_all(s, ",", ""), "?", ""), "'s", " 's");
    s = py_strip(s);
    s = py_strip(replace_all(replace_all(s, "\n", " "), "\t", " "));
    // process_punctuation: the conditions read the input, the replacements build the output
    static const char* const punct[] = {";",  "/", "[", "]", "\"", "{", "}", "(", ")", "=", "+",
                                        "\\", "_", "-", ">", "<",  "@", "`", ",", "?", "!"};
    bool comma_between_digits = false;  // COMMA_STRIP: (?<=\d)(\,)+(?=\d)
    for (std::size_t i = 1; i < s.size() && !comma_between_digits; i++) {
        if (s[i] != ',' || !is_digit(s[i - 1])) continue;
        std::size_t j = i;
        while (j < s.size() && s[j] == ',') j++;
        comma_between_digits = j < s.size() && is_digit(s[j]);
    }
    std::string out = s;
    for (const char* p : punct) {
        const std::string ps(p);
        const bool spaced = s.find(ps + " ") != std::string::npos || s.find(" " + ps) != std::string::npos;
        out = replace_all(out, ps, spaced || comma_between_digits ? "" : " ");
    }
    // PERIOD_STRIP.sub("", out, re.UNICODE): '.' not followed by a digit, at most 32 (= re.UNICODE) removed
    {
        std::string t;
        int removed = 0;
        for (std::size_t i = 0; i < out.size(); i++) {
            if (out[i] == '.' && removed < 32 && !(i + 1 < out.size() && is_digit(out[i + 1]))) {
                removed++;
                continue;
            }
            t += out[i];
        }
        out = std::move(t);
    }
    // process_digit_article
    static const std::map<std::string, std::string, std::less<>> numbers = {
        {"none", "0"}, {"zero", "0"}, {"one", "1"},   {"two", "2"},   {"three", "3"}, {"four", "4"},
        {"five", "5"}, {"six", "6"},  {"seven", "7"}, {"eight", "8"}, {"nine", "9"},  {"ten", "10"}};
    static const std::map<std::string, std::string, std::less<>> contractions = {{"aint", "ain't"},
                                                                                 {"arent", "aren't"},
                                                                                 {"cant", "can't"},
                                                                                 {"couldve", "could've"},
                                                                                 {"couldnt", "couldn't"},
                                                                                 {"couldn'tve", "couldn't've"},
                                                                                 {"couldnt've", "couldn't've"},
                                                                                 {"didnt", "didn't"},
                                                                                 {"doesnt", "doesn't"},
                                                                                 {"dont", "don't"},
                                                                                 {"hadnt", "hadn't"},
                                                                                 {"hadnt've", "hadn't've"},
                                                                                 {"hadn'tve", "hadn't've"},
                                                                                 {"hasnt", "hasn't"},
                                                                                 {"havent", "haven't"},
                                                                                 {"hed", "he'd"},
                                                                                 {"hed've", "he'd've"},
                                                                                 {"he'dve", "he'd've"},
                                                                                 {"hes", "he's"},
                                                                                 {"howd", "how'd"},
                                                                                 {"howll", "how'll"},
                                                                                 {"hows", "how's"},
                                                                                 {"Id've", "I'd've"},
                                                                                 {"I'dve", "I'd've"},
                                                                                 {"Im", "I'm"},
                                                                                 {"Ive", "I've"},
                                                                                 {"isnt", "isn't"},
                                                                                 {"itd", "it'd"},
                                                                                 {"itd've", "it'd've"},
                                                                                 {"it'dve", "it'd've"},
                                                                                 {"itll", "it'll"},
                                                                                 {"let's", "let's"},
                                                                                 {"maam", "ma'am"},
                                                                                 {"mightnt", "mightn't"},
                                                                                 {"mightnt've", "mightn't've"},
                                                                                 {"mightn'tve", "mightn't've"},
                                                                                 {"mightve", "might've"},
                                                                                 {"mustnt", "mustn't"},
                                                                                 {"mustve", "must've"},
                                                                                 {"neednt", "needn't"},
                                                                                 {"notve", "not've"},
                                                                                 {"oclock", "o'clock"},
                                                                                 {"oughtnt", "oughtn't"},
                                                                                 {"ow's'at", "'ow's'at"},
                                                                                 {"'ows'at", "'ow's'at"},
                                                                                 {"'ow'sat", "'ow's'at"},
                                                                                 {"shant", "shan't"},
                                                                                 {"shed've", "she'd've"},
                                                                                 {"she'dve", "she'd've"},
                                                                                 {"she's", "she's"},
                                                                                 {"shouldve", "should've"},
                                                                                 {"shouldnt", "shouldn't"},
                                                                                 {"shouldnt've", "shouldn't've"},
                                                                                 {"shouldn'tve", "shouldn't've"},
                                                                                 {"somebody'd", "somebodyd"},
                                                                                 {"somebodyd've", "somebody'd've"},
                                                                                 {"somebody'dve", "somebody'd've"},
                                                                                 {"somebodyll", "somebody'll"},
                                                                                 {"somebodys", "somebody's"},
                                                                                 {"someoned", "someone'd"},
                                                                                 {"someoned've", "someone'd've"},
                                                                                 {"someone'dve", "someone'd've"},
                                                                                 {"someonell", "someone'll"},
                                                                                 {"someones", "someone's"},
                                                                                 {"somethingd", "something'd"},
                                                                                 {"somethingd've", "something'd've"},
                                                                                 {"something'dve", "something'd've"},
                                                                                 {"somethingll", "something'll"},
                                                                                 {"thats", "that's"},
                                                                                 {"thered", "there'd"},
                                                                                 {"thered've", "there'd've"},
                                                                                 {"there'dve", "there'd've"},
                                                                                 {"therere", "there're"},
                                                                                 {"theres", "there's"},
                                                                                 {"theyd", "they'd"},
                                                                                 {"theyd've", "they'd've"},
                                                                                 {"they'dve", "they'd've"},
                                                                                 {"theyll", "they'll"},
                                                                                 {"theyre", "they're"},
                                                                                 {"theyve", "they've"},
                                                                                 {"twas", "'twas"},
                                                                                 {"wasnt", "wasn't"},
                                                                                 {"wed've", "we'd've"},
                                                                                 {"we'dve", "we'd've"},
                                                                                 {"weve", "we've"},
                                                                                 {"werent", "weren't"},
                                                                                 {"whatll", "what'll"},
                                                                                 {"whatre", "what're"},
                                                                                 {"whats", "what's"},
                                                                                 {"whatve", "what've"},
                                                                                 {"whens", "when's"},
                                                                                 {"whered", "where'd"},
                                                                                 {"wheres", "where's"},
                                                                                 {"whereve", "where've"},
                                                                                 {"whod", "who'd"},
                                                                                 {"whod've", "who'd've"},
                                                                                 {"who'dve", "who'd've"},
                                                                                 {"wholl", "who'll"},
                                                                                 {"whos", "who's"},
                                                                                 {"whove", "who've"},
                                                                                 {"whyll", "why'll"},
                                                                                 {"whyre", "why're"},
                                                                                 {"whys", "why's"},
                                                                                 {"wont", "won't"},
                                                                                 {"wouldve", "would've"},
                                                                                 {"wouldnt", "wouldn't"},
                                                                                 {"wouldnt've", "wouldn't've"},
                                                                                 {"wouldn'tve", "wouldn't've"},
                                                                                 {"yall", "y'all"},
                                                                                 {"yall'll", "y'all'll"},
                                                                                 {"y'allll", "y'all'll"},
                                                                                 {"yall'd've", "y'all'd've"},
                                                                                 {"y'alld've", "y'all'd've"},
                                                                                 {"y'all'dve", "y'all'd've"},
                                                                                 {"youd", "you'd"},
                                                                                 {"youd've", "you'd've"},
                                                                                 {"you'dve", "you'd've"},
                                                                                 {"youll", "you'll"},
                                                                                 {"youre", "you're"},
                                                                                 {"youve", "you've"}};
    std::vector<std::string> words;
    for (std::string w : py_split(ascii_lower(out))) {
        if (auto n = numbers.find(w); n != numbers.end()) w = n->second;
        if (w != "a" && w != "an" && w != "the") words.push_back(w);
    }
    std::string result;
    for (std::string& w : words) {
        if (auto c = contractions.find(w); c != contractions.end()) w = c->second;
        result += (result.empty() ? "" : " ") + w;
    }
    return result;
}

/// Multiple choice (eval_science_qa.py): the option letter the answer gives, or 0 when it gives none.
/// Options are A..E (the script's default); `n_choices` (when > 0) keeps only the first n_choices.
inline char mc_letter(std::string_view text, int n_choices = 0) {
    const int n = n_choices > 0 ? std::min(n_choices, 5) : 5;
    const auto option = [&](char c) { return c >= 'A' && c < char('A' + n); };
    const auto letter = [&]() -> char {
        if (text.size() == 1 && text[0] >= 'A' && text[0] <= 'E') return text[0];
        if (text.size() >= 3 && text[0] >= 'A' && text[0] <= 'E' && text.substr(1, 2) == ". ") return text[0];
        // re.findall(r'The answer is ([A-Z]).', text): non-overlapping, '.' is any character but '\n'
        constexpr std::string_view lead = "The answer is ";
        char found = 0;
        int count = 0;
        std::size_t i = 0;
        while ((i = text.find(lead, i)) != std::string_view::npos) {
            const std::size_t k = i + lead.size();
            if (k + 1 < text.size() && text[k] >= 'A' && text[k] <= 'Z' && text[k + 1] != '\n') {
                found = text[k];
                count++;
                i = k + 2;
            } else {
                i++;
            }
        }
        return count == 1 ? found : '\0';
    }();
    return option(letter) ? letter : '\0';
}

// ---------------------------------------------------------------------------------------------
// Scores
// ---------------------------------------------------------------------------------------------

/// POPE counts (positive = "yes") and the metrics eval_pope.py prints. A ratio whose denominator is
/// 0 is 0 here (the script raises ZeroDivisionError).
struct pope_result {
    std::int64_t tp = 0, fp = 0, tn = 0, fn = 0;
    std::int64_t n() const { return tp + fp + tn + fn; }
    static double ratio(double a, double b) { return b == 0 ? 0.0 : a / b; }
    double accuracy() const { return ratio(double(tp + tn), double(n())); }
    double precision() const { return ratio(double(tp), double(tp + fp)); }
    double recall() const { return ratio(double(tp), double(tp + fn)); }
    double f1() const {
        const double p = precision(), r = recall();
        return ratio(2 * p * r, p + r);
    }
    double yes_ratio() const { return ratio(double(tp + fp), double(n())); }
};

/// One POPE question: the label ("yes" true) and the model's answer text.
inline void pope_add(pope_result& r, bool label_yes, std::string_view answer) {
    const bool pred_yes = !pope_says_no(answer);
    if (pred_yes)
        (label_yes ? r.tp : r.fp)++;
    else
        (label_yes ? r.fn : r.tn)++;
}

/// The MME subtasks (calculation.py eval_type_dict), in its order.
inline const std::vector<std::string>& mme_perception() {
    static const std::vector<std::string> v = {"existence", "count", "position", "color",   "posters",
                                               "celebrity", "scene", "landmark", "artwork", "OCR"};
    return v;
}
inline const std::vector<std::string>& mme_cognition() {
    static const std::vector<std::string> v = {"commonsense_reasoning", "numerical_calculation", "text_translation",
                                               "code_reasoning"};
    return v;
}

/// One MME subtask: questions, the ones right, images and the images whose questions are all right.
struct mme_subtask {
    std::int64_t questions = 0, correct = 0, images = 0, images_all_correct = 0, other = 0;
    double accuracy() const { return questions ? double(correct) / double(questions) : 0.0; }
    double accuracy_plus() const { return images ? double(images_all_correct) / double(images) : 0.0; }
    /// calculation.py's task score: (acc + acc+) * 100.
    double score() const { return 100.0 * accuracy() + 100.0 * accuracy_plus(); }
};

struct mme_question {
    std::string subtask, image;  ///< acc+ groups the questions of one image
    bool label_yes;
    std::string answer;
};

struct mme_result {
    std::map<std::string, mme_subtask> subtasks;
    double perception() const { return sum(mme_perception()); }
    double cognition() const { return sum(mme_cognition()); }
    double sum(const std::vector<std::string>& names) const {
        double s = 0;
        for (const auto& n : names)
            if (auto it = subtasks.find(n); it != subtasks.end()) s += it->second.score();
        return s;
    }
};

inline mme_result mme_score(const std::vector<mme_question>& qs) {
    mme_result r;
    std::map<std::pair<std::string, std::string>, std::pair<int, int>> images;  // (subtask, image) -> (right, asked)
    for (const auto& q : qs) {
        mme_subtask& t = r.subtasks[q.subtask];
        const yes_no p = mme_parse(q.answer);
        const bool right = p == (q.label_yes ? yes_no::yes : yes_no::no);
        t.questions++;
        t.correct += right;
        t.other += p == yes_no::other;
        auto& im = images[{q.subtask, q.image}];
        im.first += right;
        im.second++;
    }
    for (const auto& [key, im] : images) {
        mme_subtask& t = r.subtasks[key.first];
        t.images++;
        t.images_all_correct += im.first == im.second;
    }
    return r;
}

/// VQA soft accuracy of one answer against the human answers (m4c_evaluator.py
/// TextVQAAccuracyEvaluator, the official VQA formula): the mean over the n leave-one-out subsets of
/// min(#matches among the other n-1 / 3, 1). Both sides are normalised with vqa_normalize.
inline double vqa_accuracy(std::string_view answer, const std::vector<std::string>& humans) {
    if (humans.empty()) return 0.0;
    const std::string a = vqa_normalize(answer);
    std::int64_t matches = 0;
    for (const auto& h : humans) matches += vqa_normalize(h) == a;
    double sum = 0;
    for (const auto& h : humans) {
        const std::int64_t others = matches - (vqa_normalize(h) == a ? 1 : 0);
        sum += std::min(1.0, double(others) / 3.0);
    }
    return sum / double(humans.size());
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// One JSON object of a JSONL file, with where it came from ("FILE:LINE" for messages).
struct jsonl_record {
    nlohmann::json value;
    std::string where;
    std::size_t line = 0;
};

inline constexpr std::uint64_t max_eval_file_bytes = std::uint64_t(1) << 30;

/// Reads a JSONL file: one JSON object per line, blank lines skipped. Refuses an unreadable or
/// empty file and a line that is not a JSON object, naming the file and the line.
inline std::vector<jsonl_record> read_jsonl(const std::string& path, std::string_view what = "records") {
    const std::string text = io::read_text_file(path, max_eval_file_bytes);
    std::vector<jsonl_record> out;
    std::size_t line = 0, i = 0;
    while (i < text.size()) {
        std::size_t j = text.find('\n', i);
        if (j == std::string::npos) j = text.size();
        line++;
        const std::string_view l(text.data() + i, j - i);
        i = j + 1;
        if (detail::py_strip(l).empty()) continue;
        const std::string where = path + ":" + std::to_string(line);
        io::json_parse_options opt;
        opt.max_bytes = max_eval_file_bytes;
        nlohmann::json v = io::parse_json(l, where, opt);
        ALIGNGPT_CHECK(v.is_object(), where, ": each line must be a JSON object, got ", io::detail::json_text(v));
        out.push_back({std::move(v), where, line});
    }
    ALIGNGPT_CHECK(!out.empty(), path, ": no ", what, " (the file is empty)");
    return out;
}

/// The question_id of a record as a string key: an integer as its decimal digits, a string as is.
inline std::string question_id(const nlohmann::json& j, const std::string& where) {
    const io::json_reader r(j, where, io::json_nulls::refused);
    const nlohmann::json* v = r.get("question_id");
    if (!v) r.must_be("question_id", "a string or an integer");
    if (v->is_string()) return v->get<std::string>();
    if (auto x = io::detail::json_int64(*v)) return std::to_string(*x);
    r.must_be("question_id", "a string or an integer");
}

/// One answer of an answers file (LLaVA's model_vqa*.py output: question_id, prompt, text, ...).
struct answer {
    std::string question_id, text, where;
};

/// Reads an answers file; a question_id given twice is refused (MME: see allow_repeats).
inline std::vector<answer> read_answers(const std::string& path, bool allow_repeats = false) {
    std::vector<answer> out;
    std::map<std::string, std::string> seen;
    for (const auto& rec : read_jsonl(path, "answers")) {
        const io::json_reader r(rec.value, rec.where, io::json_nulls::refused);
        answer a{question_id(rec.value, rec.where), r.string("text", std::nullopt), rec.where};
        if (!allow_repeats) {
            auto [it, fresh] = seen.emplace(a.question_id, rec.where);
            ALIGNGPT_CHECK(fresh, rec.where, ": question_id ", io::detail::quote_name(a.question_id),
                           " answered twice (first at ", it->second, ")");
        }
        out.push_back(std::move(a));
    }
    return out;
}

/// Matches answers to annotations by question_id. Every answer needs an annotation (else an error
/// naming the answer's line); with repeats (MME, whose question_id names the image and so repeats),
/// the k-th answer of an id pairs with the k-th annotation of that id. Returns, per answer, the
/// index of its annotation; `unanswered` counts annotations no answer reached.
/// `Annotation` is any record with a `question_id` string (pope_annotation, mme_annotation, ...).
template <class Annotation>
std::vector<std::size_t> match_answers(const std::vector<answer>& answers, const std::vector<Annotation>& annotations,
                                       const std::string& annotations_file, std::size_t& unanswered) {
    std::map<std::string, std::vector<std::size_t>> by_id;
    for (std::size_t k = 0; k < annotations.size(); k++) by_id[annotations[k].question_id].push_back(k);
    std::map<std::string, std::size_t> used;
    std::vector<std::size_t> out;
    for (const auto& a : answers) {
        auto it = by_id.find(a.question_id);
        ALIGNGPT_CHECK(it != by_id.end(), a.where, ": question_id ", io::detail::quote_name(a.question_id), " is not in ",
                       annotations_file);
        std::size_t& u = used[a.question_id];
        ALIGNGPT_CHECK(u < it->second.size(), a.where, ": question_id ", io::detail::quote_name(a.question_id), " answered ",
                       u + 1, " times, but ", annotations_file, " has it ", it->second.size(), " times");
        out.push_back(it->second[u++]);
    }
    unanswered = annotations.size() - answers.size();
    return out;
}

/// Checks that an annotation's question_id appears once.
inline void check_unique(std::map<std::string, std::string>& seen, const std::string& id, const std::string& where) {
    auto [it, fresh] = seen.emplace(id, where);
    ALIGNGPT_CHECK(fresh, where, ": question_id ", io::detail::quote_name(id), " appears twice (first at ", it->second, ")");
}

/// "yes"/"no" (any case: calculation.py lower()s the label; POPE's files say "yes"/"no").
inline bool read_yes_no(const io::json_reader& r, std::string_view key) {
    const nlohmann::json* v = r.get(key);
    if (v && v->is_string()) {
        const std::string s = detail::ascii_lower(detail::py_strip(v->get<std::string>()));
        if (s == "yes") return true;
        if (s == "no") return false;
    }
    r.must_be(key, "\"yes\" or \"no\"");
}

struct pope_annotation {
    std::string question_id, category;
    bool label_yes;
};

/// POPE annotations: a JSONL file of {question_id, label, [category]}, or LLaVA's directory of
/// coco_pope_<category>.json files (each JSONL; the category is the file's name, as eval_pope.py).
inline std::vector<pope_annotation> read_pope_annotations(const std::string& path) {
    namespace fs = std::filesystem;
    std::vector<std::pair<std::string, std::string>> files;  // (file, category from the name)
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
        for (const auto& e : fs::directory_iterator(path, ec)) {
            const std::string name = e.path().filename().string();
            if (name.size() > 15 && name.rfind("coco_pope_", 0) == 0 && name.substr(name.size() - 5) == ".json")
                files.emplace_back(e.path().string(), name.substr(10, name.size() - 15));
        }
        ALIGNGPT_CHECK(!ec, path, ": cannot list the directory: ", ec.message());
        ALIGNGPT_CHECK(!files.empty(), path, ": no coco_pope_<category>.json files in the directory");
        std::sort(files.begin(), files.end());
    } else {
        files.emplace_back(path, "");
    }
    std::vector<pope_annotation> out;
    std::map<std::string, std::string> seen;
    for (const auto& [file, category] : files)
        for (const auto& rec : read_jsonl(file, "annotations")) {
            const io::json_reader r(rec.value, rec.where);
            pope_annotation a{question_id(rec.value, rec.where), category, read_yes_no(r, "label")};
            if (a.category.empty()) a.category = r.string("category", std::string());
            check_unique(seen, a.question_id, rec.where);
            out.push_back(std::move(a));
        }
    return out;
}

struct mme_annotation {
    std::string question_id, subtask, image;
    bool label_yes;
};

/// MME annotations: JSONL of {question_id, label "Yes"/"No" (or "answer"), [category], [image]}.
/// The category defaults to question_id's part before the first '/' (llava_mme.jsonl's ids are
/// "category/image"), the image to question_id; each category must be one of MME's 14 subtasks.
inline std::vector<mme_annotation> read_mme_annotations(const std::string& path) {
    std::vector<mme_annotation> out;
    for (const auto& rec : read_jsonl(path, "annotations")) {
        const io::json_reader r(rec.value, rec.where);
        mme_annotation a;
        a.question_id = question_id(rec.value, rec.where);
        a.label_yes = read_yes_no(r, r.has("label") || !r.has("answer") ? "label" : "answer");
        const auto slash = a.question_id.find('/');
        a.subtask =
            r.string("category", slash == std::string::npos ? std::optional<std::string>() : a.question_id.substr(0, slash));
        a.image = r.string("image", a.question_id);
        const auto& p = mme_perception();
        const auto& c = mme_cognition();
        if (std::find(p.begin(), p.end(), a.subtask) == p.end() && std::find(c.begin(), c.end(), a.subtask) == c.end())
            aligngpt::fail(rec.where, ": category ", io::detail::quote_name(a.subtask),
                           " is not an MME subtask (existence, count, position, color, posters, celebrity, scene, "
                           "landmark, artwork, OCR, commonsense_reasoning, numerical_calculation, text_translation, "
                           "code_reasoning)");
        out.push_back(std::move(a));
    }
    return out;
}

struct vqa_annotation {
    std::string question_id;
    std::vector<std::string> answers;  ///< the human answers (10 in VQAv2)
};

namespace detail {
inline vqa_annotation vqa_entry(const nlohmann::json& j, const std::string& where) {
    const io::json_reader r(j, where);
    vqa_annotation a{question_id(j, where), {}};
    const nlohmann::json* v = r.get("answers");
    if (!v || !v->is_array() || v->empty()) r.must_be("answers", "a non-empty array of answers");
    for (const auto& h : *v) {
        if (h.is_string())
            a.answers.push_back(h.get<std::string>());
        else if (h.is_object() && h.contains("answer") && h["answer"].is_string())
            a.answers.push_back(h["answer"].get<std::string>());
        else
            r.must_be("answers", "an array of strings or of {\"answer\": string} objects");
    }
    return a;
}
}  // namespace detail

/// VQA annotations: the official VQAv2 file ({"annotations": [{question_id, answers: [{answer}]}]}),
/// TextVQA's ({"data": [{question_id, answers: [strings]}]}), or JSONL of {question_id, answers}.
inline std::vector<vqa_annotation> read_vqa_annotations(const std::string& path) {
    const std::string text = io::read_text_file(path, max_eval_file_bytes);
    std::vector<vqa_annotation> out;
    std::map<std::string, std::string> seen;
    if (nlohmann::json::accept(text)) {
        io::json_parse_options opt;
        opt.max_bytes = max_eval_file_bytes;
        const nlohmann::json j = io::parse_json(text, path, opt);
        const char* key = j.is_object() ? (j.contains("annotations") ? "annotations"
                                           : j.contains("data")      ? "data"
                                                                     : nullptr)
                                        : nullptr;
        if (key) {
            const nlohmann::json& list = j[key];
            ALIGNGPT_CHECK(list.is_array(), path, ": field '", key, "' must be an array");
            ALIGNGPT_CHECK(!list.empty(), path, ": no annotations (field '", key, "' is empty)");
            for (std::size_t k = 0; k < list.size(); k++) {
                const std::string where = path + ": " + key + "[" + std::to_string(k) + "]";
                ALIGNGPT_CHECK(list[k].is_object(), where, ": must be an object");
                vqa_annotation a = detail::vqa_entry(list[k], where);
                check_unique(seen, a.question_id, where);
                out.push_back(std::move(a));
            }
            return out;
        }
        ALIGNGPT_CHECK(j.is_object() && j.contains("question_id"), path,
                       ": neither a VQAv2 annotations file (an object with 'annotations') nor TextVQA's (with 'data') "
                       "nor JSONL of {question_id, answers}");
    }
    for (const auto& rec : read_jsonl(path, "annotations")) {
        vqa_annotation a = detail::vqa_entry(rec.value, rec.where);
        check_unique(seen, a.question_id, rec.where);
        out.push_back(std::move(a));
    }
    return out;
}

struct mc_annotation {
    std::string question_id;
    char answer;        ///< 'A'..'E'
    int n_choices = 0;  ///< 0: unknown (all of A..E count)
};

/// Multiple-choice annotations: JSONL of {question_id, answer: "A".."E" or index 0..4, [choices]}.
inline std::vector<mc_annotation> read_mc_annotations(const std::string& path) {
    std::vector<mc_annotation> out;
    std::map<std::string, std::string> seen;
    for (const auto& rec : read_jsonl(path, "annotations")) {
        const io::json_reader r(rec.value, rec.where);
        mc_annotation a{question_id(rec.value, rec.where), 0, 0};
        const nlohmann::json* v = r.get("answer");
        if (v && v->is_string()) {
            const std::string& s = v->get_ref<const std::string&>();
            if (s.size() == 1 && s[0] >= 'A' && s[0] <= 'E') a.answer = s[0];
        } else if (v) {
            if (auto x = io::detail::json_int64(*v); x && *x >= 0 && *x < 5) a.answer = char('A' + *x);
        }
        if (!a.answer) r.must_be("answer", "a letter \"A\"..\"E\" or an index 0..4");
        if (const nlohmann::json* c = r.get("choices")) {
            if (!c->is_array() || c->empty()) r.must_be("choices", "a non-empty array");
            a.n_choices = int(std::min<std::size_t>(c->size(), 5));
            if (a.answer >= char('A' + a.n_choices))
                r.fail("answer", "is ", std::string(1, a.answer), ", but there are only ", c->size(), " choices");
        }
        check_unique(seen, a.question_id, rec.where);
        out.push_back(std::move(a));
    }
    return out;
}

}  // namespace aligngpt::eval

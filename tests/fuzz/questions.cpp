// Fuzz target: the evaluation files. `aligngpt answer` reads a question file (and, with --resume,
// its own answers file); `aligngpt score` reads an answers file and a task's annotations.
//
// Input: file A, a NUL byte, then file B (no NUL: B is empty). A is read as the question file
// (eval::read_questions) and as the annotations of every task (read_pope_annotations,
// read_mme_annotations, read_vqa_annotations, read_mc_annotations); B as the answers file
// (read_answers, with and without MME's repeated ids) and, against A's questions, as the answers
// file a resumed run finds (scan_answers). When both parse, the answers are matched to each task's
// annotations (match_answers) and scored as `aligngpt score` scores them; each question is written
// back as an answers line (answer_line). Errors must name the file they concern.
#include <cstring>
#include <map>
#include <optional>

#include "aligngpt/eval/answer.h"
#include "aligngpt/eval/score.h"
#include "fuzz.h"

namespace {

using namespace aligngpt;

/// match_answers, then the metric of the task on each matched pair (run_score's loop).
template <class Annotation, class Score>
void match_and_score(const std::vector<eval::answer>& answers, const std::vector<Annotation>& ann, const std::string& a_path,
                     const std::string& b_path, Score&& score) {
    fuzz::expect_ok_or_refused(b_path, [&] {
        std::size_t unanswered = 0;
        const auto match = eval::match_answers(answers, ann, a_path, unanswered);
        for (std::size_t k = 0; k < answers.size(); k++) score(answers[k], ann[match[k]]);
    });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto* nul = static_cast<const std::uint8_t*>(std::memchr(data, 0, size));
    const std::size_t a_len = nul ? std::size_t(nul - data) : size;
    const std::string a = fuzz::put_file("questions.jsonl", fuzz::as_text(data, a_len));
    const std::string b = fuzz::put_file("answers.jsonl", nul ? fuzz::as_text(nul + 1, size - a_len - 1) : std::string_view());

    std::optional<std::vector<eval::question>> qs;
    fuzz::expect_ok_or_refused(a, [&] { qs = eval::read_questions(a); });
    if (qs) {
        for (const auto& q : *qs) (void)eval::answer_line(q, q.text, eval::answer_id(0, q.key, 0), "m");
        fuzz::expect_ok_or_refused(b, [&] { (void)eval::scan_answers(b, *qs); });
    }
    std::optional<std::vector<eval::answer>> answers, repeated;
    fuzz::expect_ok_or_refused(b, [&] { answers = eval::read_answers(b); });
    fuzz::expect_ok_or_refused(b, [&] { repeated = eval::read_answers(b, /*allow_repeats=*/true); });

    std::optional<std::vector<eval::pope_annotation>> pope;
    fuzz::expect_ok_or_refused(a, [&] { pope = eval::read_pope_annotations(a); });
    if (pope && answers) {
        eval::pope_result r;
        match_and_score(*answers, *pope, a, b,
                        [&](const eval::answer& x, const eval::pope_annotation& t) { eval::pope_add(r, t.label_yes, x.text); });
        (void)r.f1(), (void)r.yes_ratio();
    }
    std::optional<std::vector<eval::mme_annotation>> mme;
    fuzz::expect_ok_or_refused(a, [&] { mme = eval::read_mme_annotations(a); });
    if (mme && repeated) {
        std::vector<eval::mme_question> q;
        match_and_score(*repeated, *mme, a, b, [&](const eval::answer& x, const eval::mme_annotation& t) {
            q.push_back({t.subtask, t.image, t.label_yes, x.text});
        });
        const eval::mme_result r = eval::mme_score(q);
        (void)r.perception(), (void)r.cognition();
    }
    std::optional<std::vector<eval::vqa_annotation>> vqa;
    fuzz::expect_ok_or_refused(a, [&] { vqa = eval::read_vqa_annotations(a); });
    if (vqa && answers)
        match_and_score(*answers, *vqa, a, b, [&](const eval::answer& x, const eval::vqa_annotation& t) {
            (void)eval::vqa_accuracy(x.text, t.answers);
        });
    std::optional<std::vector<eval::mc_annotation>> mc;
    fuzz::expect_ok_or_refused(a, [&] { mc = eval::read_mc_annotations(a); });
    if (mc && answers)
        match_and_score(*answers, *mc, a, b,
                        [&](const eval::answer& x, const eval::mc_annotation& t) { (void)eval::mc_letter(x.text, t.n_choices); });
    return 0;
}

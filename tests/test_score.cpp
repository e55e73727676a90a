// Benchmark scoring (eval/score.h, docs/eval.md): each scorer on small fixtures whose numbers are
// computed by hand in the comments, the official scripts' normalisations on tricky strings, the
// readers' errors, and `aligngpt score` as a subprocess. The expected values were also checked
// against the official Python (LLaVA's eval_pope.py, m4c_evaluator.py); the tests need no Python.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "aligngpt/eval/score.h"
#include "support/process.h"
#include "support/scratch_dir.h"

namespace test_score {  // own namespace: the unity build joins test files (tests/CMakeLists.txt)

namespace {

using namespace aligngpt;

/// A file under the test tmp directory, unique per process and call (CTest runs cases in parallel);
/// removed when the process exits.
std::string write_tmp(const std::string& name, const std::string& text) {
    struct cleanup {
        std::vector<std::string> paths;
        ~cleanup() {
            std::error_code ec;
            for (const auto& p : paths) std::filesystem::remove_all(p, ec);
        }
    };
    static cleanup files;
    const std::string path =
        support::scratch_dir() + "/score." + std::to_string(::getpid()) + "." + std::to_string(files.paths.size()) + "." + name;
    std::ofstream(path, std::ios::binary) << text;
    files.paths.push_back(path);
    return path;
}

// POPE: 10 answers, 5 per category. The first sentence is the text before the first '.', commas
// removed, split on ' '; "No", "no" or "not" -> no, else yes.
//   random:      1 yes "Yes, there is a dog in the image."  -> yes  TP
//                2 yes "No, there is not."                  -> no   FN
//                3 no  "There is no cat. Yes."              -> no   TN  (only "There is no cat")
//                4 no  "Yes"                                -> yes  FP
//                5 yes "yes"                                -> yes  TP
//     TP 2 FP 1 TN 1 FN 1: accuracy 3/5 = 0.6, precision 2/3, recall 2/3, F1 2/3, yes-ratio 3/5
//   adversarial: 6 no  "Not at all"                         -> yes  FP  ("Not" is not in the list)
//                7 no  "The answer is no, it isn't."        -> no   TN
//                8 yes "I think so.No"                      -> yes  TP  (first sentence "I think so")
//                9 no  "no."                                -> no   TN
//               10 yes "Nope"                               -> yes  TP
//     TP 2 FP 1 TN 2 FN 0: accuracy 4/5 = 0.8, precision 2/3, recall 1, F1 2(2/3)/(5/3) = 0.8, yes 3/5
//   all: TP 4 FP 2 TN 3 FN 1: accuracy 0.7, precision 4/6, recall 4/5, F1 (16/15)/(22/15) = 8/11
//        = 0.72727, yes-ratio 0.6; mean over categories: accuracy 0.7, F1 (2/3 + 0.8)/2 = 0.73333
const char* const pope_answers[] = {"Yes, there is a dog in the image.",
                                    "No, there is not.",
                                    "There is no cat. Yes.",
                                    "Yes",
                                    "yes",
                                    "Not at all",
                                    "The answer is no, it isn't.",
                                    "I think so.No",
                                    "no.",
                                    "Nope"};
const char* const pope_labels[] = {"yes", "yes", "no", "no", "yes", "no", "no", "yes", "no", "yes"};

std::string jstr(const std::string& s) { return nlohmann::json(s).dump(); }

[[maybe_unused]] std::string pope_answers_jsonl() {
    std::string a;
    for (int i = 0; i < 10; i++)
        a += "{\"question_id\": " + std::to_string(i + 1) +
             ", \"prompt\": \"Is there a dog?\", \"text\": " + jstr(pope_answers[i]) + ", \"model_id\": \"m\"}\n";
    return a;
}
[[maybe_unused]] std::string pope_annotations_jsonl() {
    std::string a;
    for (int i = 0; i < 10; i++)
        a += "{\"question_id\": " + std::to_string(i + 1) + ", \"label\": \"" + pope_labels[i] + "\", \"category\": \"" +
             (i < 5 ? "random" : "adversarial") + "\"}\n";
    return a;
}

// MME: existence (perception), images a, b, c; code_reasoning (cognition), image d.
//   a: Yes "Yes" right, No "No" right                 -> image right
//   b: Yes "yes, it is" right (prefix "yes,"), No "Not sure" right (prefix "not " holds "no") -> image right
//   c: Yes "I don't know" other (prefix "i do") wrong, No "No" right -> image wrong
//   existence: accuracy 5/6, accuracy+ 2/3: score 100 (5/6 + 4/6) = 150
//   d: Yes "No" wrong, No "no" right: accuracy 1/2, accuracy+ 0: score 50
//   perception 150 (the other 9 subtasks absent), cognition 50
struct mme_row {
    const char *id, *label, *answer;
};
const mme_row mme_rows[] = {{"existence/a.jpg", "Yes", "Yes"},          {"existence/a.jpg", "No", "No"},
                            {"existence/b.jpg", "Yes", "yes, it is"},   {"existence/b.jpg", "No", "Not sure"},
                            {"existence/c.jpg", "Yes", "I don't know"}, {"existence/c.jpg", "No", "No"},
                            {"code_reasoning/d.png", "Yes", "No"},      {"code_reasoning/d.png", "No", "no"}};

// VQAv2 (official annotations JSON): soft accuracy, the mean over the 10 leave-one-out subsets of
// min(matches among the other 9 / 3, 1).
//   1: "Two" -> "2"; humans "two" x2 (-> "2"), "three" x8. Leaving out one of the 2: 1 match -> 1/3
//      (2 subsets); leaving out another: 2 matches -> 2/3 (8 subsets): (2/3 + 16/3)/10 = 0.6
//   2: "Red." -> "red"; humans "red" x3, "blue" x7: 3 subsets with 2 -> 2/3, 7 with 3 -> 1:
//      (2 + 7)/10 = 0.9
//   3: "cat"; humans "dog" x10: 0
//   mean (0.6 + 0.9 + 0)/3 = 0.5
[[maybe_unused]] std::string vqa_annotations_json() {  // (the CLI tests use these; not built without the tool)
    const auto answers = [](std::vector<std::pair<std::string, int>> v) {
        nlohmann::json a = nlohmann::json::array();
        int id = 1;
        for (const auto& [s, n] : v)
            for (int k = 0; k < n; k++) a.push_back({{"answer", s}, {"answer_confidence", "yes"}, {"answer_id", id++}});
        return a;
    };
    nlohmann::json j;
    j["annotations"] = {{{"question_id", 1}, {"image_id", 7}, {"answers", answers({{"two", 2}, {"three", 8}})}},
                        {{"question_id", 2}, {"image_id", 7}, {"answers", answers({{"red", 3}, {"blue", 7}})}},
                        {{"question_id", 3}, {"image_id", 8}, {"answers", answers({{"dog", 10}})}}};
    return j.dump(1);
}
[[maybe_unused]] const char* const vqa_answers_jsonl =
    "{\"question_id\": 1, \"text\": \"Two\"}\n{\"question_id\": 2, \"text\": \"Red.\"}\n\n{\"question_id\": 3, \"text\": "
    "\"cat\"}\n";

// Multiple choice (eval_science_qa.py):
//   q1 A "A" -> A right;  q2 B "B. The cat" -> B right;  q3 C "The answer is C." -> C right
//   q4 D "The answer is D. The answer is A." -> two matches -> none (wrong, no letter)
//   q5 A with 2 choices, "C" -> C is not among A, B -> none (wrong, no letter)
//   q6 answer index 1 (= B), "A" -> wrong
//   correct 3 of 6: 0.5, no letter 2
[[maybe_unused]] const char* const mc_annotations_jsonl =
    "{\"question_id\": \"q1\", \"answer\": \"A\"}\n{\"question_id\": \"q2\", \"answer\": \"B\"}\n"
    "{\"question_id\": \"q3\", \"answer\": \"C\"}\n{\"question_id\": \"q4\", \"answer\": \"D\"}\n"
    "{\"question_id\": \"q5\", \"answer\": \"A\", \"choices\": [\"x\", \"y\"]}\n{\"question_id\": \"q6\", \"answer\": 1}\n";
[[maybe_unused]] const char* const mc_answers_jsonl =
    "{\"question_id\": \"q1\", \"text\": \"A\"}\n{\"question_id\": \"q2\", \"text\": \"B. The cat\"}\n"
    "{\"question_id\": \"q3\", \"text\": \"The answer is C.\"}\n"
    "{\"question_id\": \"q4\", \"text\": \"The answer is D. The answer is A.\"}\n"
    "{\"question_id\": \"q5\", \"text\": \"C\"}\n{\"question_id\": \"q6\", \"text\": \"A\"}\n";

}  // namespace

TEST_CASE("score: POPE's normalisation (eval_pope.py) on tricky answers") {
    CHECK(!eval::pope_says_no("Yes, there is a dog in the image."));
    CHECK(eval::pope_says_no("No, there is not."));
    CHECK(eval::pope_says_no("There is no cat. Yes."));  // the first sentence only
    CHECK(!eval::pope_says_no("Yes. There is no cat."));
    CHECK(!eval::pope_says_no("Not at all"));  // "Not" is not one of No/no/not
    CHECK(!eval::pope_says_no("NO"));
    CHECK(!eval::pope_says_no("no!"));  // split on ' ': "no!" is not "no"
    CHECK(eval::pope_says_no("no,"));   // commas are removed first
    CHECK(!eval::pope_says_no("Nope"));
    CHECK(!eval::pope_says_no(""));
    CHECK(!eval::pope_says_no("it is not\n"));  // split(' ') keeps "not\n" whole: not a "not"
}

TEST_CASE("score: POPE counts and metrics per category, pooled") {
    eval::pope_result rnd, adv, all;
    for (int i = 0; i < 10; i++) {
        eval::pope_add(i < 5 ? rnd : adv, std::string(pope_labels[i]) == "yes", pope_answers[i]);
        eval::pope_add(all, std::string(pope_labels[i]) == "yes", pope_answers[i]);
    }
    CHECK(rnd.tp == 2);
    CHECK(rnd.fp == 1);
    CHECK(rnd.tn == 1);
    CHECK(rnd.fn == 1);
    CHECK(rnd.accuracy() == doctest::Approx(0.6));
    CHECK(rnd.precision() == doctest::Approx(2.0 / 3));
    CHECK(rnd.recall() == doctest::Approx(2.0 / 3));
    CHECK(rnd.f1() == doctest::Approx(2.0 / 3));
    CHECK(rnd.yes_ratio() == doctest::Approx(0.6));
    CHECK(adv.tp == 2);
    CHECK(adv.fp == 1);
    CHECK(adv.tn == 2);
    CHECK(adv.fn == 0);
    CHECK(adv.accuracy() == doctest::Approx(0.8));
    CHECK(adv.recall() == doctest::Approx(1.0));
    CHECK(adv.f1() == doctest::Approx(0.8));
    CHECK(all.n() == 10);
    CHECK(all.accuracy() == doctest::Approx(0.7));
    CHECK(all.precision() == doctest::Approx(4.0 / 6));
    CHECK(all.recall() == doctest::Approx(0.8));
    CHECK(all.f1() == doctest::Approx(8.0 / 11));
    CHECK(all.yes_ratio() == doctest::Approx(0.6));
    eval::pope_result none;  // no positive prediction: precision and F1 are 0, not a division by zero
    eval::pope_add(none, true, "no");
    CHECK(none.precision() == 0);
    CHECK(none.f1() == 0);
}

TEST_CASE("score: MME's yes/no parsing (calculation.py) and the perception/cognition sums") {
    CHECK(eval::mme_parse("Yes") == eval::yes_no::yes);
    CHECK(eval::mme_parse("NO") == eval::yes_no::no);
    CHECK(eval::mme_parse("yes, it is") == eval::yes_no::yes);
    CHECK(eval::mme_parse("Not sure") == eval::yes_no::no);         // "not " holds "no"
    CHECK(eval::mme_parse("I don't know") == eval::yes_no::other);  // only the first 4 bytes count
    CHECK(eval::mme_parse("The answer is yes") == eval::yes_no::other);
    CHECK(eval::mme_parse("eyes") == eval::yes_no::yes);  // "eyes" holds "yes"
    CHECK(eval::mme_parse("") == eval::yes_no::other);
    std::vector<eval::mme_question> qs;
    for (const auto& r : mme_rows) {
        const std::string id = r.id;
        qs.push_back({id.substr(0, id.find('/')), id, std::string(r.label) == "Yes", r.answer});
    }
    const auto m = eval::mme_score(qs);
    REQUIRE(m.subtasks.count("existence"));
    const auto& e = m.subtasks.at("existence");
    CHECK(e.questions == 6);
    CHECK(e.correct == 5);
    CHECK(e.images == 3);
    CHECK(e.images_all_correct == 2);
    CHECK(e.other == 1);
    CHECK(e.score() == doctest::Approx(150));
    CHECK(m.subtasks.at("code_reasoning").score() == doctest::Approx(50));
    CHECK(m.perception() == doctest::Approx(150));
    CHECK(m.cognition() == doctest::Approx(50));
}

TEST_CASE("score: VQA answer normalisation (m4c_evaluator.py EvalAIAnswerProcessor) on tricky strings") {
    // Each expected value is what the official Python class returns for the input.
    CHECK(eval::vqa_normalize("Two") == "2");
    CHECK(eval::vqa_normalize("The dog's bone.") == "dog 's bone");
    CHECK(eval::vqa_normalize("a man, riding") == "man riding");
    CHECK(eval::vqa_normalize("1,000") == "1000");
    CHECK(eval::vqa_normalize("3.5 meters") == "3.5 meters");  // a '.' before a digit stays
    CHECK(eval::vqa_normalize("Yes!") == "yes");
    CHECK(eval::vqa_normalize("well-known") == "well known");  // '-' with no space around: a space
    CHECK(eval::vqa_normalize("dont know") == "don't know");
    CHECK(eval::vqa_normalize("NONE") == "0");
    CHECK(eval::vqa_normalize("an apple") == "apple");
    CHECK(eval::vqa_normalize("(red)") == "red");
    CHECK(eval::vqa_normalize("hello ,world") == "hello world");
    CHECK(eval::vqa_normalize("it's 10 o'clock") == "it 's 10 o'clock");
    CHECK(eval::vqa_normalize("no... way.") == "no way");
    CHECK(eval::vqa_normalize("Ten dogs") == "10 dogs");
    CHECK(eval::vqa_normalize("people/persons") == "people persons");
    CHECK(eval::vqa_normalize("I'm sure") == "i'm sure");
    CHECK(eval::vqa_normalize("Im sure") == "im sure");  // "Im" -> "I'm" never applies after lower()
    CHECK(eval::vqa_normalize("  \tThe  Cat\n") == "cat");
    // re.UNICODE (32) is passed as sub's count: only the first 32 periods go
    std::string dots = "x";
    for (int i = 0; i < 40; i++) dots += ". ";
    CHECK(eval::vqa_normalize(dots + "y") == "x . . . . . . . . y");
}

TEST_CASE("score: VQA soft accuracy over the 10 leave-one-out subsets") {
    const auto humans = [](std::vector<std::pair<std::string, int>> v) {
        std::vector<std::string> h;
        for (const auto& [s, n] : v) h.insert(h.end(), std::size_t(n), s);
        return h;
    };
    CHECK(eval::vqa_accuracy("Two", humans({{"two", 2}, {"three", 8}})) == doctest::Approx(0.6));
    CHECK(eval::vqa_accuracy("Red.", humans({{"red", 3}, {"blue", 7}})) == doctest::Approx(0.9));
    // 1 of 10: 9 subsets with 1 match -> 1/3, one with 0: 9/30 = 0.3
    CHECK(eval::vqa_accuracy("2", humans({{"two", 1}, {"four", 9}})) == doctest::Approx(0.3));
    // 4 or more of 10: every subset has >= 3 matches -> 1
    CHECK(eval::vqa_accuracy("a dog", humans({{"dog", 4}, {"cat", 6}})) == doctest::Approx(1.0));
    CHECK(eval::vqa_accuracy("cat", humans({{"dog", 10}})) == 0);
    // "2", "two" and "Two." are one answer after normalisation: 3 matches -> (3 * 2/3 + 7)/10 = 0.9
    CHECK(eval::vqa_accuracy("two", {"2", "two", "Two.", "a", "b", "c", "d", "e", "f", "g"}) == doctest::Approx(0.9));
}

TEST_CASE("score: multiple-choice letter extraction (eval_science_qa.py)") {
    CHECK(eval::mc_letter("A") == 'A');
    CHECK(eval::mc_letter("E") == 'E');
    CHECK(eval::mc_letter("F") == 0);  // options are A..E
    CHECK(eval::mc_letter("B. The cat") == 'B');
    CHECK(eval::mc_letter("B.The cat") == 0);  // needs ". "
    CHECK(eval::mc_letter("(B)") == 0);
    CHECK(eval::mc_letter("The answer is C.") == 'C');
    CHECK(eval::mc_letter("So. The answer is Dx") == 'D');             // the pattern's '.' is any character
    CHECK(eval::mc_letter("The answer is C") == 0);                    // ... but one must follow
    CHECK(eval::mc_letter("The answer is D. The answer is A.") == 0);  // two matches
    CHECK(eval::mc_letter("The answer is F.") == 0);                   // found, but not an option
    CHECK(eval::mc_letter("C", 2) == 0);                               // beyond the question's 2 choices
    CHECK(eval::mc_letter("B", 2) == 'B');
    CHECK(eval::mc_letter("a") == 0);
    CHECK(eval::mc_letter("") == 0);
}

TEST_CASE("score: the readers refuse bad files, naming the file and the line") {
    const auto msg = [](const std::function<void()>& f) { return support::message_of(f); };
    const std::string empty = write_tmp("empty.jsonl", "\n  \n");
    CHECK(msg([&] { eval::read_answers(empty); }) == empty + ": no answers (the file is empty)");
    const std::string bad_json =
        write_tmp("bad.jsonl", "{\"question_id\": 1, \"text\": \"yes\"}\n{\"question_id\": 2, \"text\": \n");
    CHECK(msg([&] { eval::read_answers(bad_json); }).rfind(bad_json + ":2: invalid JSON", 0) == 0);
    const std::string not_object = write_tmp("arr.jsonl", "[1, 2]\n");
    CHECK(msg([&] { eval::read_answers(not_object); }) == not_object + ":1: each line must be a JSON object, got [1,2]");
    const std::string no_text = write_tmp("notext.jsonl", "{\"question_id\": 1, \"text\": 5}\n");
    CHECK(msg([&] { eval::read_answers(no_text); }) == no_text + ":1: field 'text' must be a string, got 5");
    const std::string twice =
        write_tmp("twice.jsonl", "{\"question_id\": 1, \"text\": \"a\"}\n{\"question_id\": 1, \"text\": \"b\"}\n");
    CHECK(msg([&] { eval::read_answers(twice); }) == twice + ":2: question_id \"1\" answered twice (first at " + twice + ":1)");
    const std::string no_id = write_tmp("noid.jsonl", "{\"question_id\": 1, \"label\": \"yes\"}\n{\"label\": \"no\"}\n");
    CHECK(msg([&] { eval::read_pope_annotations(no_id); }) ==
          no_id + ":2: field 'question_id' must be a string or an integer, but it is missing");
    const std::string bad_label = write_tmp("label.jsonl", "{\"question_id\": 1, \"label\": \"maybe\"}\n");
    CHECK(msg([&] { eval::read_pope_annotations(bad_label); }) ==
          bad_label + ":1: field 'label' must be \"yes\" or \"no\", got \"maybe\"");
    const std::string bad_cat = write_tmp("mme.jsonl", "{\"question_id\": \"colour/a.jpg\", \"label\": \"Yes\"}\n");
    CHECK(msg([&] { eval::read_mme_annotations(bad_cat); }).rfind(bad_cat + ":1: category \"colour\" is not an MME subtask", 0) ==
          0);
    const std::string vqa_empty = write_tmp("vqa.json", "{\"annotations\": [{\"question_id\": 1, \"answers\": []}]}");
    CHECK(msg([&] { eval::read_vqa_annotations(vqa_empty); }) ==
          vqa_empty + ": annotations[0]: field 'answers' must be a non-empty array of answers, got []");
    const std::string vqa_other = write_tmp("other.json", "{\n  \"questions\": []\n}\n");
    CHECK(msg([&] { eval::read_vqa_annotations(vqa_other); }).rfind(vqa_other + ": neither a VQAv2 annotations file", 0) == 0);
    const std::string mc_bad = write_tmp("mc.jsonl", "{\"question_id\": \"q\", \"answer\": \"Z\"}\n");
    CHECK(msg([&] { eval::read_mc_annotations(mc_bad); }) ==
          mc_bad + ":1: field 'answer' must be a letter \"A\"..\"E\" or an index 0..4, got \"Z\"");
    CHECK(msg([&] { eval::read_answers(empty + ".missing"); }).find(empty + ".missing") != std::string::npos);
}

#if defined(ALIGNGPT_TOOL_PATH)
namespace {
struct tool_result {
    int code;
    std::string out, err;
};
tool_result score(const std::string& args) {
    const std::string err_file = write_tmp("stderr.txt", "");
    const auto r = support::run_command("'" + std::string(ALIGNGPT_TOOL_PATH) + "' score " + args + " 2>'" + err_file + "'");
    std::ifstream f(err_file);
    std::string err((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::remove(err_file.c_str());
    return {r.code, r.output, err};
}
std::string q(const std::string& s) { return "'" + s + "'"; }
}  // namespace

TEST_CASE("aligngpt score --task pope: per category, pooled and the mean; LLaVA's coco_pope_ directory") {
    const std::string ans = write_tmp("pope_answers.jsonl", pope_answers_jsonl());
    const auto r =
        score("--task pope --answers-file " + q(ans) + " --annotations " + q(write_tmp("pope.jsonl", pope_annotations_jsonl())));
    CAPTURE(r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out ==
          "pope adversarial: n=5 TP=2 FP=1 TN=2 FN=0 accuracy=0.8000 precision=0.6667 recall=1.0000 f1=0.8000 yes_ratio=0.6000\n"
          "pope random: n=5 TP=2 FP=1 TN=1 FN=1 accuracy=0.6000 precision=0.6667 recall=0.6667 f1=0.6667 yes_ratio=0.6000\n"
          "pope all: n=10 TP=4 FP=2 TN=3 FN=1 accuracy=0.7000 precision=0.6667 recall=0.8000 f1=0.7273 yes_ratio=0.6000\n"
          "pope mean over 2 categories: accuracy=0.7000 f1=0.7333\n");
    // LLaVA's layout: a directory of coco_pope_<category>.json (JSONL, category from the name)
    const std::string dir = write_tmp("pope_dir", "");
    std::remove(dir.c_str());
    std::filesystem::create_directory(dir);
    std::string rnd, adv;
    for (int i = 0; i < 10; i++)
        (i < 5 ? rnd : adv) += "{\"question_id\": " + std::to_string(i + 1) +
                               ", \"image\": \"x.jpg\", \"text\": \"Is there a dog?\", \"label\": \"" + pope_labels[i] + "\"}\n";
    std::ofstream(dir + "/coco_pope_random.json") << rnd;
    std::ofstream(dir + "/coco_pope_adversarial.json") << adv;
    const auto d = score("--task=pope --answers_file " + q(ans) + " --annotations " + q(dir));
    CHECK(d.code == 0);
    CHECK(d.out == r.out);
    std::filesystem::remove_all(dir);
    // an annotation without an answer is reported on stderr and not scored
    const auto part = score("--task pope --answers-file " + q(write_tmp("a.jsonl", "{\"question_id\": 1, \"text\": \"Yes\"}\n")) +
                            " --annotations " + q(write_tmp("pope.jsonl", pope_annotations_jsonl())));
    CHECK(part.code == 0);
    CHECK(part.out.find("pope all: n=1 TP=1 ") != std::string::npos);
    CHECK(part.err.find("9 question(s) of ") != std::string::npos);
}

TEST_CASE("aligngpt score --task mme|vqa|mc prints the hand-computed numbers") {
    std::string ann, ans;
    for (const auto& r : mme_rows) {
        ann += std::string("{\"question_id\": \"") + r.id + "\", \"label\": \"" + r.label + "\"}\n";
        ans += std::string("{\"question_id\": \"") + r.id + "\", \"prompt\": \"q\", \"text\": " + jstr(r.answer) + "}\n";
    }
    const auto m = score("--task mme --answers-file " + q(write_tmp("mme_a.jsonl", ans)) + " --annotations " +
                         q(write_tmp("mme.jsonl", ann)));
    CAPTURE(m.err);
    REQUIRE(m.code == 0);
    CHECK(m.out ==
          "mme existence: questions=6 images=3 accuracy=0.8333 accuracy_plus=0.6667 score=150.00 not_yes_no=1\n"
          "mme code_reasoning: questions=2 images=1 accuracy=0.5000 accuracy_plus=0.0000 score=50.00\n"
          "mme perception: 150.00\nmme cognition: 50.00\n");

    const auto v = score("--task vqa --answers-file " + q(write_tmp("vqa_a.jsonl", vqa_answers_jsonl)) + " --annotations " +
                         q(write_tmp("vqa.json", vqa_annotations_json())));
    CAPTURE(v.err);
    CHECK(v.code == 0);
    CHECK(v.out == "vqa: n=3 accuracy=0.5000\n");
    // the same as JSONL with string answers (TextVQA's shape)
    std::string vj;
    const nlohmann::json official = nlohmann::json::parse(vqa_annotations_json());
    for (const auto& a : official["annotations"]) {
        nlohmann::json l = {{"question_id", a["question_id"]}, {"answers", nlohmann::json::array()}};
        for (const auto& h : a["answers"]) l["answers"].push_back(h["answer"]);
        vj += l.dump() + "\n";
    }
    const auto v2 = score("--task vqa --answers-file " + q(write_tmp("vqa_a.jsonl", vqa_answers_jsonl)) + " --annotations " +
                          q(write_tmp("vqa.jsonl", vj)));
    CAPTURE(v2.err);
    CHECK(v2.out == "vqa: n=3 accuracy=0.5000\n");

    const auto c = score("--task mc --answers-file " + q(write_tmp("mc_a.jsonl", mc_answers_jsonl)) + " --annotations " +
                         q(write_tmp("mc.jsonl", mc_annotations_jsonl)));
    CAPTURE(c.err);
    CHECK(c.code == 0);
    CHECK(c.out == "mc: n=6 correct=3 no_letter=2 accuracy=0.5000\n");
}

TEST_CASE("aligngpt score: bad flags exit 2 naming the flag; bad files exit 1 naming the file and line") {
    const std::string ann = write_tmp("pope.jsonl", pope_annotations_jsonl());
    const std::string ans = write_tmp("pope_a.jsonl", pope_answers_jsonl());
    auto r = score("--task popo --answers-file " + q(ans) + " --annotations " + q(ann));
    CHECK(r.code == 2);
    CHECK(r.err.find("--task must be pope, mme, vqa or mc, got \"popo\"") != std::string::npos);
    r = score("--task pope --annotations " + q(ann));
    CHECK(r.code == 2);
    CHECK(r.err.find("score needs --answers-file") != std::string::npos);
    r = score("--task pope --answers-file " + q(ans) + " --annotations " + q(ann) + " --threads 2");
    CHECK(r.code == 2);
    CHECK(r.err.find("unknown option \"--threads\"") != std::string::npos);
    r = score("--task pope --answers-file " + q(ans + ".missing") + " --annotations " + q(ann));
    CHECK(r.code == 1);
    CHECK(r.err.find(ans + ".missing") != std::string::npos);
    const std::string bad = write_tmp("bad.jsonl", "{\"question_id\": 1, \"text\": \"yes\"}\n{\"question_id\": 2, \"text\"\n");
    r = score("--task pope --answers-file " + q(bad) + " --annotations " + q(ann));
    CHECK(r.code == 1);
    CHECK(r.err.find("aligngpt: error: " + bad + ":2: invalid JSON") != std::string::npos);
    r = score("--task pope --answers-file " + q(write_tmp("empty.jsonl", "")) + " --annotations " + q(ann));
    CHECK(r.code == 1);
    CHECK(r.err.find(": no answers (the file is empty)") != std::string::npos);
    const std::string stray =
        write_tmp("stray.jsonl", "{\"question_id\": 1, \"text\": \"yes\"}\n{\"question_id\": 99, \"text\": \"no\"}\n");
    r = score("--task pope --answers-file " + q(stray) + " --annotations " + q(ann));
    CHECK(r.code == 1);
    CHECK(r.err.find(stray + ":2: question_id \"99\" is not in " + ann) != std::string::npos);
    const std::string no_id = write_tmp("noid.jsonl", "{\"question_id\": 1, \"answer\": \"A\"}\n{\"answer\": \"B\"}\n");
    r = score("--task mc --answers-file " + q(ans) + " --annotations " + q(no_id));
    CHECK(r.code == 1);
    CHECK(r.err.find(no_id + ":2: field 'question_id' must be a string or an integer, but it is missing") != std::string::npos);
}
#endif  // ALIGNGPT_TOOL_PATH

}  // namespace test_score

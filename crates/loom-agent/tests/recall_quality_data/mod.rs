//! The recall-quality dataset, generated deterministically: users with one fact in each of 50
//! categories (home, job, pets, diet, family, …), each fact in one of two phrasings, and questions
//! that paraphrase what the fact says without repeating its value (the asker does not know it).
//!
//! Some question phrasings share a word with the fact ("Where do I live now?" / "I live in
//! Lisbon."), most do not ("Which city am I based in?"). The distractors are the user's other
//! facts: several categories are built to compete for the same questions (home city, home town,
//! where the grandmother and the sister live; favourite and hated food; languages spoken, learnt
//! and programmed in; trips planned and taken; …).

/// One category: the values a user may have, how a fact says it, and how a question asks for it.
pub struct Category {
    pub values: &'static [&'static str],
    pub facts: [&'static str; 2],
    pub questions: &'static [&'static str],
}

const fn c(values: &'static [&'static str], facts: [&'static str; 2], questions: &'static [&'static str]) -> Category {
    Category { values, facts, questions }
}

const CITIES: &[&str] = &[
    "Lisbon",
    "Berlin",
    "Toronto",
    "Osaka",
    "Nairobi",
    "Melbourne",
    "Denver",
    "Lyon",
    "Krakow",
    "Seoul",
    "Bogota",
    "Glasgow",
];

/// The 50 categories.
pub const CATEGORIES: [Category; 50] = [
    c(
        CITIES,
        ["I live in {v}.", "Home for me is {v} these days."],
        &["Which city am I based in?", "Where do I live now?", "What is my current place of residence?"],
    ),
    c(
        CITIES,
        ["I grew up in {v}.", "I was born and raised in {v}."],
        &["Where did I spend my childhood?", "What town am I originally from?"],
    ),
    c(
        &[
            "a nurse",
            "a software engineer",
            "an accountant",
            "a high school teacher",
            "a plumber",
            "a pilot",
            "a chef",
            "an architect",
            "a pharmacist",
            "a journalist",
        ],
        ["I work as {v}.", "My job is being {v}."],
        &["What do I do for a living?", "What is my profession?", "What's my occupation?"],
    ),
    c(
        &[
            "Northwind Bank",
            "Globex",
            "St. Mary's Hospital",
            "a small robotics startup",
            "the city council",
            "Initech",
            "a logistics firm",
            "a public library",
        ],
        ["I'm employed at {v}.", "My employer is {v}."],
        &["Which company do I work for?", "Who pays my salary?"],
    ),
    c(
        &[
            "a dog named Rex",
            "a cat called Luna",
            "two goldfish",
            "a parrot named Kiwi",
            "a rabbit called Clover",
            "an old beagle named Toby",
            "a tortoise named Shelly",
        ],
        ["I have {v}.", "At home I look after {v}."],
        &["What animal do I keep as a pet?", "Do I own any pets?"],
    ),
    c(
        &["peanuts", "shellfish", "penicillin", "cat dander", "pollen", "gluten", "bee stings", "latex"],
        ["I'm allergic to {v}.", "{v} gives me a severe allergic reaction."],
        &["What am I allergic to?", "What triggers my allergy?", "Is there anything that makes me break out in hives?"],
    ),
    c(
        &["sushi", "lasagna", "pad thai", "tacos", "ramen", "paella", "butter chicken", "pierogi"],
        ["My favourite dish is {v}.", "I could eat {v} every single day."],
        &["What meal do I enjoy the most?", "What's my favourite food?"],
    ),
    c(
        &[
            "green tea",
            "black coffee",
            "a flat white",
            "orange juice",
            "hot chocolate",
            "matcha latte",
            "sparkling water",
        ],
        ["Every morning I drink {v}.", "I start the day with {v}."],
        &["What beverage do I have when I wake up?", "What's my morning drink?"],
    ),
    c(
        &[
            "rock climbing",
            "knitting",
            "birdwatching",
            "woodworking",
            "salsa dancing",
            "painting watercolours",
            "chess",
            "baking sourdough",
        ],
        ["On weekends I enjoy {v}.", "My favourite hobby is {v}."],
        &["What do I do in my free time?", "What's my pastime?"],
    ),
    c(
        &["the piano", "the violin", "the guitar", "the drums", "the cello", "the saxophone", "the ukulele"],
        ["I play {v}.", "I've been taking lessons on {v} for years."],
        &["Which musical instrument can I perform on?", "Do I make any music myself?"],
    ),
    c(
        &[
            "FC Porto",
            "the Chicago Bulls",
            "Arsenal",
            "the Toronto Maple Leafs",
            "Boca Juniors",
            "the New York Yankees",
            "Celtic",
        ],
        ["I support {v}.", "I'm a lifelong fan of {v}."],
        &["Which sports club do I cheer for?", "What team am I a supporter of?"],
    ),
    c(
        &["Japanese", "Portuguese", "Korean", "Italian", "Swahili", "Mandarin", "Dutch", "Arabic"],
        ["I'm learning {v} on an app.", "I take evening classes in {v}."],
        &["Which foreign language am I studying?", "What language am I trying to pick up?"],
    ),
    c(
        &["Spanish", "Polish", "Greek", "Hindi", "French", "Turkish", "Vietnamese"],
        ["My mother tongue is {v}.", "I grew up speaking {v} at home."],
        &["What was the first language I spoke as a child?", "What's my native language?"],
    ),
    c(
        &[
            "a red Toyota Corolla",
            "an old Volvo estate",
            "a white Tesla Model 3",
            "a blue Vespa scooter",
            "a rusty Ford pickup",
            "a Honda Civic",
        ],
        ["I drive {v}.", "My car is {v}."],
        &["What vehicle do I own?", "What do I drive?"],
    ),
    c(
        &["by bike", "by train", "on foot", "by bus", "by ferry", "by car"],
        ["I commute to the office {v}.", "I get to work {v} every day."],
        &["How do I travel to my workplace?", "What's my commute like?"],
    ),
    c(
        &["Maria", "Sophie", "Daniel", "Amara", "Kenji", "Elena", "Lucas", "Priya"],
        ["My wife is called {v}.", "My partner's name is {v}."],
        &["Who am I married to?", "What's my spouse's name?"],
    ),
    c(
        &["Leo", "Mia", "Noah", "Ava", "Yusuf", "Hana", "Oscar", "Zoe"],
        ["My son {v} just started school.", "Our kid {v} turns six next month."],
        &["What is my child's name?", "How is my little one called?"],
    ),
    c(
        &["Clara", "Ines", "Tom", "Rafael", "Aiko", "Grace", "Ivan"],
        ["My sister {v} lives abroad.", "My younger sibling is {v}."],
        &["What's my sister's name?", "Do I have any brothers or sisters?"],
    ),
    c(
        &["January", "March", "May", "July", "September", "October", "December"],
        ["My birthday is in {v}.", "I was born in {v}."],
        &["When do I celebrate getting a year older?", "Which month is my birthday?"],
    ),
    c(
        &["vegetarian", "vegan", "pescatarian", "keto", "halal", "kosher"],
        ["I follow a {v} diet.", "I've eaten {v} for years."],
        &["Do I eat meat?", "What are my dietary restrictions?"],
    ),
    c(
        &["green", "navy blue", "orange", "purple", "yellow", "teal", "burgundy"],
        ["My favourite colour is {v}.", "I love anything in {v}."],
        &["Which shade do I like best?", "What colour do I prefer?"],
    ),
    c(
        &["science fiction", "crime", "historical", "fantasy", "romance", "horror"],
        ["I mostly read {v} novels.", "My bookshelf is full of {v} books."],
        &["What kind of literature do I enjoy?", "What genre of books do I like?"],
    ),
    c(
        &["jazz", "heavy metal", "classical", "hip hop", "bossa nova", "techno", "folk"],
        ["I listen to {v} while working.", "{v} is always playing in my headphones."],
        &["What sort of music do I enjoy?", "What tunes do I put on?"],
    ),
    c(
        &["Casablanca", "Spirited Away", "The Godfather", "Amelie", "Alien", "Paddington 2", "Parasite"],
        ["My all-time favourite film is {v}.", "I've watched {v} more than twenty times."],
        &["Which movie do I love the most?", "What is my favourite film?"],
    ),
    c(
        &["Iceland", "Vietnam", "Peru", "Morocco", "New Zealand", "Norway", "Japan"],
        ["I'm planning a trip to {v} next summer.", "Next year's holiday will be in {v}."],
        &["Where am I going on vacation?", "What's my upcoming travel destination?"],
    ),
    c(
        &["Mexico", "Greece", "Thailand", "Scotland", "Egypt", "Chile", "Croatia"],
        ["Last year I visited {v}.", "I just came back from two weeks in {v}."],
        &["Which country did I travel to recently?", "Where was my last holiday?"],
    ),
    c(
        &["10", "25", "40", "15", "30", "5"],
        ["I run {v} kilometres every week.", "My weekly running distance is {v} km."],
        &["How much jogging do I do?", "How far do I run?"],
    ),
    c(
        &["10 pm", "midnight", "1 am", "9:30 pm", "11 pm"],
        ["I usually go to bed around {v}.", "Lights out for me is at {v}."],
        &["When do I fall asleep at night?", "What time do I go to sleep?"],
    ),
    c(
        &["high blood pressure", "asthma", "type 2 diabetes", "migraines", "an underactive thyroid", "eczema"],
        ["I take medication for {v}.", "My doctor is treating me for {v}."],
        &["What health condition do I have?", "Why am I on prescription drugs?"],
    ),
    c(
        &["spiders", "heights", "deep water", "flying", "clowns", "thunderstorms", "snakes"],
        ["I'm terrified of {v}.", "{v} scare me more than anything."],
        &["What am I afraid of?", "What is my phobia?"],
    ),
    c(
        &[
            "chemistry",
            "economics",
            "philosophy",
            "mechanical engineering",
            "art history",
            "nursing",
            "computer science",
        ],
        ["I studied {v} at university.", "My degree is in {v}."],
        &["What was my major in college?", "What subject did I study?"],
    ),
    c(
        &[
            "McGill",
            "the University of Porto",
            "Kyoto University",
            "Trinity College Dublin",
            "ETH Zurich",
            "the University of Cape Town",
        ],
        ["I graduated from {v}.", "I'm an alumnus of {v}."],
        &["Which university did I attend?", "Where did I go to college?"],
    ),
    c(
        &["two-bedroom", "tiny studio", "top-floor", "basement", "three-room", "loft-style"],
        ["I rent a {v} flat.", "Our place is a {v} apartment."],
        &["What kind of apartment do I have?", "Describe my home."],
    ),
    c(
        &["tomatoes", "roses", "chillies", "herbs", "strawberries", "sunflowers", "lettuce"],
        ["I grow {v} in my garden.", "My balcony is full of {v}."],
        &["What plants do I cultivate?", "What do I grow?"],
    ),
    c(
        &["porridge", "scrambled eggs", "yoghurt with granola", "toast and jam", "a croissant", "leftover rice"],
        ["For breakfast I usually have {v}.", "My first meal of the day is {v}."],
        &["What do I eat in the morning?", "What's my usual breakfast?"],
    ),
    c(
        &["an animal shelter", "a food bank", "the children's hospital", "a soup kitchen", "a refugee centre"],
        ["I volunteer at {v} on Saturdays.", "Every weekend I help out at {v}."],
        &["Where do I do charity work?", "Do I volunteer anywhere?"],
    ),
    c(
        &["Zelda", "Minecraft", "Elden Ring", "Stardew Valley", "FIFA", "Tetris"],
        ["I'm hooked on the video game {v}.", "I spend my evenings playing {v}."],
        &["What am I gaming on lately?", "Which video game do I play?"],
    ),
    c(
        &["Radiolab", "The Daily", "Hardcore History", "99% Invisible", "Serial", "Planet Money"],
        ["I never miss an episode of {v}.", "My favourite podcast is {v}."],
        &["Which show do I listen to?", "What podcast do I follow?"],
    ),
    c(
        &["42", "38", "44", "40", "46", "37"],
        ["My shoe size is {v}.", "I wear size {v} shoes."],
        &["What size footwear do I need?", "How big are my feet?"],
    ),
    c(
        &["an iPhone 15", "a Pixel 8", "a Galaxy S23", "a Fairphone", "an old Nokia"],
        ["My phone is {v}.", "I carry {v} everywhere."],
        &["What smartphone do I use?", "Which mobile device do I have?"],
    ),
    c(
        &["Linux", "macOS", "Windows", "FreeBSD", "ChromeOS"],
        ["My laptop runs {v}.", "I do all my work on {v}."],
        &["Which operating system do I prefer?", "What OS is on my computer?"],
    ),
    c(
        &["Rust", "Python", "Haskell", "Go", "TypeScript", "Kotlin", "Elixir"],
        ["My favourite programming language is {v}.", "I write most of my code in {v}."],
        &["Which language do I like to write software in?", "What do I usually code in?"],
    ),
    c(
        &[
            "a house deposit",
            "a new camera",
            "a trip around the world",
            "my daughter's tuition",
            "an electric bike",
            "retirement",
        ],
        ["I'm saving up for {v}.", "Every month I put money aside for {v}."],
        &["What am I saving money for?", "What's my financial goal?"],
    ),
    c(
        &["June 12", "April 3", "August 21", "November 30", "February 14", "September 9"],
        ["Our wedding anniversary is on {v}.", "We got married on {v}."],
        &["When did I get married?", "What date is my anniversary?"],
    ),
    c(
        CITIES,
        ["My grandmother lives in {v}.", "Grandma still has her house in {v}."],
        &["Where does my grandma live?", "Which city is my grandmother in?"],
    ),
    c(
        &["olives", "mushrooms", "coriander", "blue cheese", "liver", "anchovies", "beetroot"],
        ["I can't stand {v}.", "{v} make me gag."],
        &["What food do I hate?", "Is there anything I refuse to eat?"],
    ),
    c(
        &["Autumn", "Winter", "Spring", "Summer"],
        ["{v} is my favourite season.", "I feel happiest in {v}."],
        &["What time of year do I like best?", "Which season do I love?"],
    ),
    c(
        &["10 pm to 6 am", "6 am to 2 pm", "noon to 8 pm", "7 pm to 3 am"],
        ["I work shifts from {v}.", "My working hours are {v}."],
        &["What hours am I on duty?", "When is my shift?"],
    ),
    c(
        &["Max", "Bella", "Charlie", "Rocky", "Daisy", "Milo"],
        ["My neighbour's dog {v} barks all night.", "The dog next door, {v}, keeps me awake."],
        &["Whose pet disturbs my sleep?", "Why can't I sleep at night?"],
    ),
    c(
        &["a marathon", "a triathlon", "a half marathon", "a 100 km bike ride", "a mountain trek"],
        ["I'm training for {v} in the spring.", "My fitness goal this year is {v}."],
        &["What athletic event am I preparing for?", "What's my sports goal?"],
    ),
];

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One generated user: 50 facts, and questions each naming the fact (by index) that answers it.
pub struct User {
    pub id: String,
    pub facts: Vec<String>,
    pub questions: Vec<(String, usize)>,
}

/// `users` users with one fact per category and `questions` questions each (on distinct
/// categories), from `seed`.
pub fn generate(users: usize, questions: usize, seed: u64) -> Vec<User> {
    let mut rng = Rng(seed.max(1));
    (0..users)
        .map(|u| {
            let facts: Vec<String> = CATEGORIES
                .iter()
                .map(|cat| {
                    let value = cat.values[rng.below(cat.values.len())];
                    let template = cat.facts[rng.below(2)];
                    capitalize(&template.replace("{v}", value))
                })
                .collect();
            let mut asked: Vec<usize> = Vec::new();
            while asked.len() < questions.min(CATEGORIES.len()) {
                let k = rng.below(CATEGORIES.len());
                if !asked.contains(&k) {
                    asked.push(k);
                }
            }
            let questions = asked
                .into_iter()
                .map(|k| {
                    let qs = CATEGORIES[k].questions;
                    (qs[rng.below(qs.len())].to_string(), k)
                })
                .collect();
            User { id: format!("user-{u:03}"), facts, questions }
        })
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

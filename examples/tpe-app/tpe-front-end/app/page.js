export default function Home() {
  return (
    <main>
      <h1>The Power100 Experience</h1>
      <p>AI concierge for contractors.</p>
    </main>
  );
}
